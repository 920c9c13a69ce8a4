"""Export adapters for other runtimes: GGUF files for llama.cpp, an ONNX model for ONNX Runtime.

    toolkit.export("wikitext103", "export/wikitext103")                        # adapter.gguf + base.gguf
    toolkit.export({"a": 0.7, "b": 0.3}, "export/mix", merged=True, tensor_type="q8_0", verify=True)
    toolkit.export("wikitext103", "export/onnx", format="onnx", verify=True)   # model.onnx (merged)

The adapters are loaded and verified as `load` does and merged as `merge` does (onto the base reloaded at full
precision, whatever they were trained on; a mix is the exact weighted sum). Every file is written into a
temporary folder that becomes `out` only when all are complete. `verify` then runs each file in its runtime
and compares the logits with the toolkit's on the same tokens.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import ToolkitError, param
from ..files import atomic_folder, read_json, write_json
from ..generation.merging import batch_logits, check_out, load_to_merge, trained_quantized, verify_batches
from ..modeling.mixing import parse_weights
from ..modeling.switching import base_of
from ..store.store import AdapterStore
from . import gguf_files, onnx_files, runtimes

FORMATS = ("gguf", "onnx")
TYPES = gguf_files.TYPES
RECORD = "export.json"  # what an export folder holds: format, type, files, adapters
ADAPTER_FILE, BASE_FILE, MERGED_FILE = "adapter.gguf", "base.gguf", "merged.gguf"
# verify: the largest |logit difference| / the largest |logit| that each file may show against the toolkit's
# fp32 logits. Measured on tiny and 124M GPT-2s (docs/export.md): f32 and ONNX differ by float rounding only.
TOLERANCES = {"f32": 1e-3, "f16": 1e-2, "bf16": 5e-2, "q8_0": 0.1, "onnx": 1e-4}


@dataclass(frozen=True)
class Check:
    """One exported file run in its runtime, against the toolkit's logits on the same tokens."""

    file: str  # the file's name in the export folder
    runtime: str  # llama.cpp or ONNX Runtime
    difference: float  # largest |logit difference| / largest |logit| of the toolkit
    tolerance: float  # TOLERANCES of the file's type
    what: str = ""  # which run: "with adapter.gguf", "with past key values", ...

    @property
    def passed(self) -> bool:
        return self.difference <= self.tolerance

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "passed": self.passed}


@dataclass(frozen=True)
class Exported:
    path: Path  # the export folder
    format: str  # gguf or onnx
    tensor_type: str  # of the weights: f32, f16, bf16, q8_0 (ONNX: f32)
    files: list[str]  # the files written for the runtime, in the folder
    weights: dict[str, float]  # adapter -> weight
    base: str  # the base the adapters were trained on
    full_precision: list[str]  # adapters trained on a quantized base, exported against the full-precision one
    checks: list[Check] = field(default_factory=list)  # with verify
    not_verified: list[str] = field(default_factory=list)  # with verify: why a runtime did not run

    def to_json(self) -> dict:
        """What `gpt2-adapt export --json` prints."""
        return {
            "path": str(self.path),
            "format": self.format,
            "type": self.tensor_type,
            "files": self.files,
            "weights": self.weights,
            "base": self.base,
            "full_precision": self.full_precision,
            "checks": [check.to_json() for check in self.checks],
            "not_verified": self.not_verified,
        }


def export(
    adapters,
    out: str | Path,
    *,
    format: str = "gguf",
    tensor_type: str = "f32",
    adapter_file: bool = True,
    base_file: bool = True,
    merged: bool = False,
    base: str | None = None,
    store: AdapterStore | str | Path | None = None,
    strict: bool = True,
    verify: bool = False,
    overwrite: bool = False,
) -> Exported:
    """Write adapters for llama.cpp (GGUF) or ONNX Runtime into the folder `out`; return what was written.

    `adapters`: a name, names, "a=0.7,b=0.3" or {name: weight} (several: their exact weighted sum).
    GGUF: adapter.gguf (the LoRA, for llama.cpp's --lora; `adapter_file=False` leaves it out), base.gguf (the
    base to run it on; `base_file=False` leaves it out) and, with `merged`, merged.gguf (base and adapter in
    one model); `tensor_type` f32, f16, bf16 or q8_0 sets the weights' type. ONNX: model.onnx, the merged
    model with past key values, in float32. `verify` runs every file in its runtime (when installed).
    """
    store = store if isinstance(store, AdapterStore) else AdapterStore(store)
    weights = parse_weights([adapters] if isinstance(adapters, str) else adapters, label="export")
    _check_request(format, tensor_type, adapter_file, base_file, merged)
    if format == "gguf" and adapter_file:
        _check_adapter_files(store, weights)
    out = Path(out).expanduser()
    replace_out = check_out(out, overwrite, store, marker=RECORD, kind="an export")
    full_precision = [name for name in weights if trained_quantized(store, name)]

    model, tokenizer, adapter = load_to_merge(weights, base=base, store=store, strict=strict)
    config = base_of(model).config
    recorded = store.base_for(list(weights))
    base_label = base or (recorded.name if recorded else config.name_or_path)
    batches = [batch.tolist() for batch in verify_batches(config)] if verify else []
    reference = {"adapter": _reference(model, batches)}
    if verify and format == "gguf" and base_file:
        with model.disable_adapter():
            reference["base"] = _reference(model, batches)

    files = []
    with atomic_folder(out, replace=replace_out) as tmp:
        if format == "gguf":
            if adapter_file:
                gguf_files.write_lora(
                    tmp / ADAPTER_FILE, gguf_files.lora_pairs(model, adapter), config.n_layer, tensor_type
                )
                files.append(ADAPTER_FILE)
            if base_file:
                gguf_files.write_model(tmp / BASE_FILE, base_of(model), tokenizer, tensor_type)
                files.append(BASE_FILE)
        if merged or format == "onnx":
            plain = model.merge_and_unload(adapter_names=[adapter])  # the last use of `model`: it merges in place
            if format == "gguf":
                gguf_files.write_model(tmp / MERGED_FILE, plain, tokenizer, tensor_type)
                files.append(MERGED_FILE)
            else:
                onnx_files.write_onnx(tmp, plain, tokenizer)
                files.append(onnx_files.MODEL_FILE)
        write_json(
            tmp / RECORD,
            {
                "format": format,
                "tensor_type": tensor_type,
                "files": files,
                "weights": weights,
                "base": base_label,
                "full_precision": full_precision,
            },
        )

    result = Exported(out, format, tensor_type, files, weights, base_label, full_precision)
    if not verify:
        return result
    checks, not_verified = _verify(result, batches, reference)
    return Exported(out, format, tensor_type, files, weights, base_label, full_precision, checks, not_verified)


def _check_request(format: str, tensor_type: str, adapter_file: bool, base_file: bool, merged: bool) -> None:
    problems = []
    if format not in FORMATS:
        problems.append(f"{param('format')}: {format!r} is not one of {', '.join(FORMATS)}")
    if tensor_type not in TYPES:
        problems.append(f"{param('tensor_type')}: {tensor_type!r} is not one of {', '.join(TYPES)}")
    elif format == "onnx" and tensor_type != "f32":
        problems.append(
            f"{param('tensor_type')}: the ONNX model is written in float32 only (got {tensor_type!r}); "
            "leave the type out, or export GGUF for f16, bf16 or q8_0"
        )
    if format == "onnx" and importlib.util.find_spec("onnxscript") is None:
        problems.append(
            "the ONNX export needs torch's exporter packages (onnx, onnxscript), which are not installed; "
            "install them with: pip install 'gpt2-adapt[export]'"
        )
    if format == "gguf" and not (adapter_file or base_file or merged):
        problems.append(
            f"nothing to export: {param('adapter_file', False)} and {param('base_file', False)} leave only "
            f"{param('merged', True)}, which is not set"
        )
    if problems:
        raise ToolkitError(*problems)


def _check_adapter_files(store: AdapterStore, weights: dict[str, float]) -> None:
    """Refuse what a llama.cpp LoRA file cannot carry, before anything is loaded or written."""
    fix = f"export it merged instead ({param('merged', True)} with {param('adapter_file', False)})"
    problems = []
    for name in weights:
        config = read_json(store.require(name) / "adapter_config.json")
        if config.get("use_dora"):
            problems.append(
                f"adapter {name!r} uses DoRA, and llama.cpp's LoRA has no magnitude vector to hold it; {fix}"
            )
        if config.get("bias", "none") != "none":
            problems.append(
                f"adapter {name!r} trains biases ({config['bias']}), which llama.cpp's LoRA cannot hold; {fix}"
            )
        if config.get("modules_to_save"):
            problems.append(
                f"adapter {name!r} saves whole modules ({', '.join(config['modules_to_save'])}), which "
                f"llama.cpp's LoRA cannot hold; {fix}"
            )
    if problems:
        raise ToolkitError(*problems)


def _reference(model, batches: list[list[list[int]]]) -> list[torch.Tensor]:
    return [batch_logits(model, torch.tensor(batch)) for batch in batches]


def _verify(result: Exported, batches, reference) -> tuple[list[Check], list[str]]:
    """Each file of `result` run by its runtime on `batches`, against the toolkit's logits."""
    runtime = runtimes.LLAMA if result.format == "gguf" else runtimes.ONNX
    if not runtimes.installed(runtime):
        return [], [runtimes.missing(runtime)]
    rows = [row for batch in batches for row in batch]
    expected = {key: torch.cat(value).numpy() for key, value in reference.items()}
    folder, files = result.path, result.files
    if result.format == "onnx":
        half = len(rows[0]) // 2
        return [
            Check(
                onnx_files.MODEL_FILE,
                runtime,
                _relative(runtimes.onnx_logits(folder, rows), expected["adapter"]),
                TOLERANCES["onnx"],
                "without past key values",
            ),
            Check(
                onnx_files.MODEL_FILE,
                runtime,
                _relative(runtimes.onnx_logits(folder, rows, past_from=half), expected["adapter"]),
                TOLERANCES["onnx"],
                f"with past key values from token {half}",
            ),
        ], []
    tolerance = TOLERANCES[result.tensor_type]
    checks, not_verified = [], []
    if BASE_FILE in files:
        base_logits = runtimes.llama_logits(folder / BASE_FILE, rows)
        checks.append(Check(BASE_FILE, runtime, _relative(base_logits, expected["base"]), tolerance))
        if ADAPTER_FILE in files:
            with_adapter = runtimes.llama_logits(folder / BASE_FILE, rows, lora=folder / ADAPTER_FILE)
            checks.append(
                Check(ADAPTER_FILE, runtime, _relative(with_adapter, expected["adapter"]), tolerance, f"on {BASE_FILE}")
            )
            # A LoRA that llama.cpp ignores would pass the check above only if the adapter did nothing.
            effect = _relative(expected["adapter"], expected["base"])
            if effect > tolerance and _relative(with_adapter, base_logits) <= tolerance:
                checks.append(Check(ADAPTER_FILE, runtime, effect, tolerance, "llama.cpp ignored it: no effect"))
    elif ADAPTER_FILE in files:
        not_verified.append(f"{ADAPTER_FILE}: not run, for it needs {BASE_FILE} (exported without it)")
    if MERGED_FILE in files:
        checks.append(
            Check(
                MERGED_FILE,
                runtime,
                _relative(runtimes.llama_logits(folder / MERGED_FILE, rows), expected["adapter"]),
                tolerance,
            )
        )
    return checks, not_verified


def _relative(actual, expected) -> float:
    return float(abs(actual - expected).max() / abs(expected).max())
