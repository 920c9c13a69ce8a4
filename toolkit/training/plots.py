"""Pictures a person looks at: the training curves saved beside each adapter."""

from __future__ import annotations

from pathlib import Path


def training_curves(log_history: list[dict], base_perplexity: float, path: Path) -> None:
    """Training loss and evaluation perplexity over steps (from the Trainer's state.log_history), as a PNG;
    the base's perplexity is the adapter's starting point (a fresh LoRA update is zero)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display is needed or wanted
    import matplotlib.pyplot as plt

    losses = [(e["step"], e["loss"]) for e in log_history if "loss" in e and "step" in e]
    evals = [(0, base_perplexity)] + [(e["step"], e["eval_perplexity"]) for e in log_history if "eval_perplexity" in e]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5), dpi=100)
    if losses:
        left.plot(*zip(*losses), marker=".", color="tab:blue")
    left.set(title="training loss", xlabel="step", ylabel="loss (nats/token)")
    right.plot(*zip(*evals), marker="o", color="tab:orange", label="adapter")
    right.axhline(base_perplexity, color="gray", linestyle="--", label="base")
    right.set(title="evaluation perplexity", xlabel="step", ylabel="perplexity")
    right.legend()
    for axis in (left, right):
        axis.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
