"""Pretraining `builtin:tiny-gpt2`: the one place where the toolkit trains every weight of a model.

LoRA adapts a base that already knows a language. The quickstart runs offline, where no such base can be
downloaded, so the toolkit makes a small one from the prose every Python installation ships (`builtin.
python_prose`): once, deterministically, about a minute on 2 CPU cores, cached in a folder named by what went
into it (the plan below and the corpus's sha256). It is a demonstration base, far below GPT-2; nothing else
in the toolkit trains a full model.

The loop is written out instead of run through the Trainer: a fixed number of steps in one process, with no
checkpoints, evaluation, logging backends or devices to choose, which is what the Trainer is for; here it
would only add start-up time to a build that has to be quick.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from ..files import atomic_folder, writable_cache
from ..hardware import cpu_has_native_bf16
from .builtin import code_texts, corpus_digest, python_code, python_prose, random_gpt2, train_tokenizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainingPlan:
    """What the builtin base is: its shape and how it is trained. Any change names a new cache folder."""

    vocab_size: int = 1024
    n_layer: int = 2
    n_embd: int = 128
    n_head: int = 4
    n_positions: int = 256  # also the length of every pretraining window: each position it declares is trained
    steps: int = 400
    batch_size: int = 8  # windows per step: 8 x 256 tokens
    learning_rate: float = 5e-3
    warmup_steps: int = 20
    final_learning_rate: float = 0.1  # share of the peak that the cosine decay ends at
    seed: int = 0
    log_every: int = 100

    def key(self, corpus: str) -> str:
        fields = {k: v for k, v in asdict(self).items() if k != "log_every"}
        return hashlib.sha256(json.dumps([fields, corpus], sort_keys=True).encode()).hexdigest()[:16]


PLAN = PretrainingPlan()


def tiny_gpt2() -> Path:
    """builtin:tiny-gpt2's folder: 2 layers, 128 dimensions, 256 positions, pretrained on `builtin.python_prose`
    (about a minute on 2 CPU cores, once; the folder is named by what went into it). Its 1,024-token BPE is
    trained on that prose and on python-code's training modules, as GPT-2's was on web text that holds code:
    code is spelled in tokens the base has, though it was never trained to predict them."""
    return build_tiny_gpt2(python_prose()["train"], vocabulary=[python_code()["train"]])


def build_tiny_gpt2(corpus: Path, vocabulary: list[Path] = (), plan: PretrainingPlan = PLAN) -> Path:
    """The folder of the base pretrained on `corpus` (one paragraph per line) by `plan`, its tokenizer
    trained on `corpus` and the python-code files in `vocabulary`; built if missing. Processes that ask at
    once (the ranks of a torchrun) wait for the first one's build."""
    folder = writable_cache() / "builtin" / f"tiny-gpt2-{plan.key(corpus_digest([corpus, *vocabulary]))}"
    if (folder / "config.json").exists():
        return folder
    with _build_lock(folder):
        if not (folder / "config.json").exists():
            log.info(
                "building builtin:tiny-gpt2: pretraining a 2-layer GPT-2 on Python's own documentation "
                "(once, about a minute; cached in %s)",
                folder,
            )
            with atomic_folder(folder) as tmp:
                texts = corpus.read_text(encoding="utf-8").splitlines() + [t for f in vocabulary for t in code_texts(f)]
                tokenizer = train_tokenizer(texts, plan.vocab_size, plan.n_positions)
                model = random_gpt2(
                    tokenizer,
                    plan.seed,
                    n_layer=plan.n_layer,
                    n_embd=plan.n_embd,
                    n_head=plan.n_head,
                    n_positions=plan.n_positions,
                    resid_pdrop=0.0,
                    embd_pdrop=0.0,
                    attn_pdrop=0.0,
                )
                pretrain(model, corpus_tokens(tokenizer, corpus), plan)
                model.save_pretrained(tmp)
                tokenizer.save_pretrained(tmp)
    return folder


def corpus_tokens(tokenizer, corpus: Path):
    """The corpus as one tensor of token ids, EOS after each line (each paragraph is a document)."""
    import torch

    lines = [line for line in corpus.read_text(encoding="utf-8").splitlines() if line.strip()]
    ids: list[int] = []
    for encoded in tokenizer(lines, verbose=False)["input_ids"]:  # lines longer than a block are expected
        ids += encoded + [tokenizer.eos_token_id]
    return torch.tensor(ids, dtype=torch.long)


def pretrain(model, ids, plan: PretrainingPlan) -> None:
    """`plan.steps` AdamW steps on random windows of `ids`, warm-up then cosine decay, bf16 autocast where
    the CPU multiplies bf16 natively. Deterministic: the windows come from a generator seeded by the plan."""
    import torch

    # Windows of every position the model declares: positions never trained on would make more context
    # score worse, not better.
    block = plan.n_positions
    if len(ids) <= block:
        raise ValueError(f"the pretraining corpus has {len(ids)} tokens, fewer than a window of {block}")
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=plan.learning_rate, betas=(0.9, 0.95), weight_decay=0.0)
    windows = torch.Generator().manual_seed(plan.seed)
    offsets = torch.arange(block)
    for step in range(plan.steps):
        for group in optimizer.param_groups:
            group["lr"] = plan.learning_rate * _schedule(step, plan)
        starts = torch.randint(0, len(ids) - block, (plan.batch_size, 1), generator=windows)
        batch = ids[starts + offsets]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cpu_has_native_bf16()):
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if (step + 1) % plan.log_every == 0 or step + 1 == plan.steps:
            log.info("builtin:tiny-gpt2: step %d/%d  loss %.3f", step + 1, plan.steps, loss.item())
    model.eval()


def _schedule(step: int, plan: PretrainingPlan) -> float:
    """The learning rate's share of its peak: linear warm-up, then cosine decay to `final_learning_rate`."""
    if step < plan.warmup_steps:
        return (step + 1) / plan.warmup_steps
    progress = (step - plan.warmup_steps) / max(1, plan.steps - plan.warmup_steps)
    return plan.final_learning_rate + (1 - plan.final_learning_rate) * 0.5 * (1 + math.cos(math.pi * progress))


@contextlib.contextmanager
def _build_lock(folder: Path):
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
        yield
