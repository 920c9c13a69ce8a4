"""`gpt2-adapt bench`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..bench_report import PARTS
from . import main


@main.command()
@click.option("--model", default="gpt2", show_default=True, metavar="ID_OR_DIR",
              help="The architecture and tokenizer to measure (hub id or folder); its weights are not read.")
@click.option("--text", "texts", multiple=True, metavar="FILE",
              help="Text files to train on, one document per line (repeatable) [default: builtin:python-docs].")
@click.option("--block-size", default=512, show_default=True, help="Tokens per training block.")
@click.option("--batch-size", default=2, show_default=True, help="Blocks per step.")
@click.option("--steps", default=4, show_default=True, help="Timed training steps per run (after one warm-up step).")
@click.option("--repeats", default=3, show_default=True, help="Runs per measurement; the median is reported.")
@click.option("--only", "parts", multiple=True, type=click.Choice(PARTS),
              help="Measure only these parts (repeatable) [default: all].")
@click.option("--json", "as_json", is_flag=True, help="Print the measurements as JSON.")
def bench(model, texts, block_size, batch_size, steps, repeats, parts, as_json) -> None:
    """Training, memory, evaluation, generation and data preparation speed on this machine.

    Trains the default recipe side by side with a plain peft + Trainer script and the 2022 seed's
    padded full fine-tune, each in a fresh process, and prints one table with the targets. The model has
    the architecture of --model with random weights. A few minutes on a laptop for GPT-2 (124M). Examples:

        gpt2-adapt bench

        gpt2-adapt bench --model gpt2-medium --text notes.txt --only training --json
    """
    from .. import bench as benchmark
    from ..bench_report import table
    from ..builtin import python_docs
    from ..errors import ToolkitError

    problems = [f"--text: no such file {t!r}; pass a text file, one document per line" for t in texts
                if not Path(t).is_file()]
    for name, value, least in (("--block-size", block_size, 2), ("--batch-size", batch_size, 1),
                               ("--steps", steps, 1), ("--repeats", repeats, 1)):
        if value < least:
            problems.append(f"{name}: must be at least {least} (got {value})")
    if problems:
        raise ToolkitError(*problems)
    if not texts:
        texts = (str(python_docs()["train"]),)
    setup = benchmark.Setup(model=model, texts=list(texts), block_size=block_size, batch_size=batch_size,
                            steps=steps, repeats=repeats, parts=tuple(parts) or PARTS)
    results = benchmark.run(setup, report=lambda line: click.echo(line, err=True))
    click.echo(json.dumps(results, indent=2) if as_json else table(results))
