"""The training step's fast paths compute what the plain ones do: the chunked output-layer loss against
transformers' own loss (value and gradients, fp32 and bf16 autocast), the Trainer's loss, the training-time
evaluation, the attention implementations, dropout switched off, and the precision "auto" picks."""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, TrainingArguments, default_data_collator

from toolkit.config.recipe import load_recipe
from toolkit.data.streams import TokenStream
from toolkit.evaluation.scoring import score
from toolkit.hardware import cpu_has_native_bf16
from toolkit.modeling import head_loss
from toolkit.modeling.base import load_base, scoring_attention, training_attention
from toolkit.modeling.dropout import ATTENTION
from toolkit.modeling.precision import training_precision
from toolkit.records import Protocol
from toolkit.training.checkpoints import CheckpointKeeper
from toolkit.training.trainer import AdapterTrainer


def stream_of(ids: torch.Tensor) -> TokenStream:
    """Rows of token ids as documents scored on their own, each row's first token its context (where EOS
    stands in a real stream), so that every other token is scored given the row before it; one token more
    closes the stream. Each token is one byte and one word: the counts do not matter here."""
    rows, length = ids.shape
    flat = torch.cat([ids.reshape(-1), ids[:1, 0]]).numpy()
    ones = flat * 0 + 1
    return TokenStream(flat, ones, ones, torch.arange(rows).numpy() * length + 1, by_document=True)


def score_blocks(model, ids: torch.Tensor) -> float:
    """The summed NLL the scorer gives tokens 1.. of each row of `ids`, given the row before them."""
    scored = score(model, stream_of(ids), Protocol(ids.shape[1], ids.shape[1], by_document=True)).score
    return scored.mean_nll * scored.tokens


@pytest.fixture
def lora_model(tiny_model):
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    base.loss_type = "ForCausalLM"
    config = LoraConfig(r=4, target_modules=["c_attn"], fan_in_fan_out=True, lora_dropout=0.0, init_lora_weights=False)
    return get_peft_model(base, config).eval()  # eval: no dropout, so two passes are comparable


def loss_and_grads(model, compute):
    model.zero_grad()
    loss = compute()
    loss.backward()
    return loss.item(), torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
def test_summed_nll_matches_the_models_own_loss_and_gradients(lora_model, autocast):
    torch.manual_seed(1)
    ids = torch.randint(0, lora_model.config.vocab_size, (3, 64))
    labels = ids.clone()
    labels[1, 10:30] = head_loss.IGNORE_INDEX  # unscored positions count for nothing
    head_loss.CHUNK_ELEMENTS, saved = 7 * lora_model.config.vocab_size, head_loss.CHUNK_ELEMENTS  # many chunks
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            own = loss_and_grads(lora_model, lambda: lora_model(input_ids=ids, labels=labels).loss)

            def chunked():
                hidden = lora_model(input_ids=ids, output_hidden_states=True, logits_to_keep=1).hidden_states[-1]
                total = head_loss.summed_nll(hidden, lora_model.get_output_embeddings().weight, labels)
                return total / (labels[:, 1:] != head_loss.IGNORE_INDEX).sum()

            fused = loss_and_grads(lora_model, chunked)
    finally:
        head_loss.CHUNK_ELEMENTS = saved
    assert fused[0] == pytest.approx(own[0], rel=1e-6)
    scale = own[1].abs().max()
    # fp32: the same arithmetic in another order; bf16: the gradient of the logits is rounded to bf16 either way
    assert (fused[1] - own[1]).abs().max() <= (1e-5 if not autocast else 2e-2) * scale
    assert own[1].abs().max() > 0


def test_the_scorer_scores_each_window_like_cross_entropy(lora_model):
    """The scorer (training's evaluation and eval's) on a peft model: the model's own logits' cross entropy."""
    ids = torch.randint(0, lora_model.config.vocab_size, (2, 40))
    scored = score(lora_model, stream_of(ids), Protocol(40, 40, by_document=True)).score
    logits = lora_model(input_ids=ids).logits.double()
    expected = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="sum")
    assert scored.tokens == 2 * 39
    assert scored.mean_nll * scored.tokens == pytest.approx(expected.item(), rel=1e-6)


def test_the_trainers_loss_is_the_models_own(lora_model, tmp_path):
    """AdapterTrainer.compute_loss (chunked head) gives the loss and gradients of the model's own loss."""
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", per_device_train_batch_size=4)
    trainer = AdapterTrainer(
        keeper=CheckpointKeeper(1, 0.0),
        protocol=Protocol(48, 48),
        eval_dataset=None,
        model=lora_model,
        args=args,
        data_collator=default_data_collator,
    )
    assert trainer.fused_head
    ids = torch.randint(0, lora_model.config.vocab_size, (4, 48))
    batch = {"input_ids": ids, "labels": ids}
    count = ids[:, 1:].numel()
    own = loss_and_grads(lora_model, lambda: lora_model(**batch).loss)
    fused = loss_and_grads(lora_model, lambda: trainer.compute_loss(lora_model, dict(batch), num_items_in_batch=count))
    assert fused[0] == pytest.approx(own[0], rel=1e-6)
    assert torch.allclose(fused[1], own[1], rtol=1e-4, atol=1e-7)


def test_base_dropout_false_switches_the_bases_dropout_off(tiny_model, corpus_dir, write_recipe):
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(tiny_model).attn_pdrop > 0  # the checkpoint has dropout to switch off
    kept = load_base(load_recipe(write_recipe()))
    off = load_base(load_recipe(write_recipe(), ["training.base_dropout=false"]))
    rates = lambda model: {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)}
    assert rates(kept) == {kept.config.attn_pdrop} and kept.config.attn_pdrop > 0
    assert rates(off) == {0.0}
    assert (off.config.attn_pdrop, off.config.resid_pdrop, off.config.embd_pdrop) == (0.0, 0.0, 0.0)


def test_auto_precision_is_bf16_exactly_where_the_cpu_multiplies_bf16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert training_precision("auto") == ("bf16" if cpu_has_native_bf16() else "fp32")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert training_precision("auto") == "fp32"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert training_precision("auto") == "bf16"
    assert training_precision("fp32") == "fp32"


def test_training_attention_and_scoring_attention_agree(tiny_model, write_recipe):
    """Training uses the attention fastest for forward + backward on this device, evaluation switches to
    the fused one and back; both give the same scores."""
    model = load_base(load_recipe(write_recipe(), ["training.base_dropout=false"])).eval()
    assert (
        model.config._attn_implementation
        == training_attention()
        == ("sdpa" if torch.cuda.is_available() else ATTENTION)
    )
    ids = torch.randint(0, model.config.vocab_size, (2, 40))
    plain = score_blocks(model, ids)
    with scoring_attention(model):
        assert model.config._attn_implementation == "sdpa"
        fused = score_blocks(model, ids)
    assert model.config._attn_implementation == training_attention()
    assert fused == pytest.approx(plain, rel=1e-5)
