"""Precision's one home: the words, and their translation to and from torch's dtypes and a checkpoint's
declared dtype (training's "auto" is tested with the fast paths, in test_fast_paths.py)."""

import pytest
import torch
from transformers import AutoConfig

from toolkit.errors import ToolkitError
from toolkit.modeling.precision import (
    FULL_PRECISIONS,
    LOAD_PRECISIONS,
    LoadPrecision,
    checkpoint_precision,
    precision_of,
    torch_dtype,
)


@pytest.mark.parametrize(
    ("precision", "dtype"), [("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)]
)
def test_each_full_precision_is_one_torch_dtype_both_ways(precision, dtype):
    assert torch_dtype(precision) is dtype
    assert precision_of(dtype) == precision
    assert precision_of(str(dtype)) == precision == precision_of(str(dtype).removeprefix("torch."))


@pytest.mark.parametrize("other", [torch.int8, torch.float64, "float8_e4m3fn", None])
def test_a_dtype_that_is_no_full_precision_has_no_name(other):
    assert precision_of(other) is None


@pytest.mark.parametrize(("declared", "expected"), [("float16", "fp16"), ("bfloat16", "bf16"), (None, "fp32")])
def test_a_checkpoint_precision_is_what_its_config_json_declares(tiny_model, tmp_path, declared, expected):
    config = AutoConfig.from_pretrained(tiny_model)
    config.dtype = declared
    config.save_pretrained(tmp_path)
    assert checkpoint_precision(AutoConfig.from_pretrained(tmp_path)) == expected


@pytest.mark.parametrize("name", LOAD_PRECISIONS)
def test_a_load_precision_is_a_weights_dtype_or_a_quantized_base_computing_in_fp32(name):
    precision = LoadPrecision(name)
    if name in FULL_PRECISIONS:
        assert (precision.dtype, precision.quantization) == (torch_dtype(name), "none")
    else:
        assert (precision.dtype, precision.quantization) == (torch.float32, name)


@pytest.mark.parametrize("name", ["float32", "bfloat16", "int4", "auto"])
def test_a_load_precision_takes_only_the_toolkits_words(name):
    with pytest.raises(ToolkitError) as refused:
        LoadPrecision(name)
    assert str(refused.value).startswith("precision: must be one of fp32, bf16, fp16, int8, nf4, fp4")
