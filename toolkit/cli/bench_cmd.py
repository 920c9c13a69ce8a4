"""`gpt2-adapt bench`."""

from __future__ import annotations

from pathlib import Path

import click

from ..bench.report import PARTS
from .options import emit_json, json_option


@click.command()
@click.option(
    "--model",
    default="gpt2",
    show_default=True,
    metavar="ID_OR_DIR",
    help="The architecture and tokenizer to measure (hub id or folder); its weights are not read.",
)
@click.option(
    "--text",
    "texts",
    multiple=True,
    metavar="FILE",
    help="Text files to train on, one document per line (repeatable) [default: builtin:python-docs].",
)
@click.option("--block-size", default=512, show_default=True, help="Tokens per training block.")
@click.option("--batch-size", default=2, show_default=True, help="Blocks per step.")
@click.option("--steps", default=4, show_default=True, help="Timed training steps per run (after one warm-up step).")
@click.option("--repeats", default=3, show_default=True, help="Runs per measurement; the median is reported.")
@click.option(
    "--only",
    "parts",
    multiple=True,
    type=click.Choice(PARTS),
    help="Measure only these parts (repeatable) [default: all].",
)
@json_option
def bench(model, texts, block_size, batch_size, steps, repeats, parts, as_json) -> None:
    """Training, memory, evaluation, generation, data preparation and serving speed on this machine.

    Trains the default recipe (also with one core kept busy, without GPT-2's dropout, and on fp32, 8-bit
    and 4-bit bases), evaluates, generates, packs data and serves, each measurement in a fresh process,
    and prints one table. The model has the architecture of --model with random weights. A few minutes
    on a laptop for GPT-2 (124M). Examples:

        gpt2-adapt bench

        gpt2-adapt bench --model gpt2-medium --text notes.txt --only training --json
    """
    from ..bench import runner
    from ..bench.cases import Setup
    from ..bench.report import table
    from ..errors import ToolkitError
    from ..sources.builtin import python_docs

    problems = [problem for t in texts if (problem := text_problem(t))]
    for name, value, least in (
        ("--block-size", block_size, 2),
        ("--batch-size", batch_size, 1),
        ("--steps", steps, 1),
        ("--repeats", repeats, 1),
    ):
        if value < least:
            problems.append(f"{name}: must be at least {least} (got {value})")
    if problems:
        raise ToolkitError(*problems)
    if not texts:
        texts = (str(python_docs()["train"]),)
    setup = Setup(
        model=model,
        texts=list(texts),
        block_size=block_size,
        batch_size=batch_size,
        steps=steps,
        repeats=repeats,
        parts=tuple(parts) or PARTS,
    )
    results = runner.measure(setup, report=lambda line: click.echo(line, err=True))
    if as_json:
        emit_json(results)
    else:
        click.echo(table(results))


def text_problem(path: str) -> str | None:
    """Why a --text file cannot be trained on: missing, unreadable, or not UTF-8 text."""
    if not Path(path).is_file():
        return f"--text: no such file {path!r}; pass a text file, one document per line"
    try:
        Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return f"--text: {path} is not UTF-8 text; pass a text file, one document per line"
    except OSError as err:
        return f"--text: cannot read {path} ({err.strerror or err}); pass a readable text file"
    return None
