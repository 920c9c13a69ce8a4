"""`gpt2-adapt adapters ...`: list, show, path, rm and import adapters in the store."""

from __future__ import annotations

import datetime

import click

from ..errors import ToolkitError
from .options import emit_json, json_option, store_option


@click.group()
def adapters() -> None:
    """Manage the adapter store.

    Example: gpt2-adapt adapters list
    """


def _store(store: str | None):
    from ..store.store import AdapterStore

    return AdapterStore(store)


def _entries(adapter_store) -> list[dict]:
    """Every adapter's row; one that cannot be shown at all (a symbolic link, say) is a row with its problem."""
    rows = []
    for name in adapter_store.names():
        try:
            rows.append(adapter_store.info(name).summary())
        except ToolkitError as err:
            rows.append({"name": name, "problems": err.problems})
    return rows


@adapters.command("list")
@store_option
@json_option
def list_adapters(store: str | None, as_json: bool) -> None:
    """List the adapters in the store, one row each; a damaged one is marked with what is wrong.

    Example: gpt2-adapt adapters list --json
    """
    adapter_store = _store(store)
    rows = _entries(adapter_store)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo(f"no adapters in {adapter_store.root}", err=True)
        return
    table = [["NAME", "BASE", "DATASET", "RANK", "TARGETS", "SIZE", "PERPLEXITY", "CREATED"]]
    damaged = []
    for r in rows:
        if r["problems"]:
            damaged.append(r)
            table.append([r["name"], "DAMAGED: " + "; ".join(r["problems"]), "", "", "", "", "", ""])
            continue
        ppl = "-"
        if r["base_perplexity"] is not None and r["adapted_perplexity"] is not None:
            ppl = f"{r['base_perplexity']:.2f} -> {r['adapted_perplexity']:.2f}"
        targets = ",".join(r["targets"]) if isinstance(r["targets"], list) else str(r["targets"])
        table.append(
            [
                r["name"],
                _short(r["base"]),
                _short(r["dataset"]),
                str(r["rank"]),
                targets,
                _size(r["bytes"]),
                ppl,
                _when(r["created"]),
            ]
        )
    widths = [max(len(row[i]) for row in table if not row[1].startswith("DAMAGED")) for i in range(len(table[0]))]
    for row in table:
        cells = row[:2] if row[1].startswith("DAMAGED") else row
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip())
    if damaged:
        click.echo(
            f"{len(damaged)} damaged: `gpt2-adapt adapters show NAME` says what; retrain or remove them", err=True
        )


@adapters.command("show")
@click.argument("name")
@store_option
@json_option
def show(name: str, store: str | None, as_json: bool) -> None:
    """Everything the store knows of an adapter: recipe, metrics, provenance, files.

    Example: gpt2-adapt adapters show wikitext103
    """
    info = _store(store).info(name)
    if info.problems:
        raise ToolkitError(*(f"adapter {name!r}: {p}; retrain it or remove it" for p in info.problems))
    if as_json:
        emit_json(info.to_json())
        return
    row = info.summary()
    click.echo(f"{name}  ({info.path})")
    for key in ("base", "dataset", "rank", "variant", "quantization", "format", "targets", "created"):
        if row[key] is not None:
            click.echo(f"  {key}: {row[key]}")
    metrics = info.metrics
    for stage in ("base", "adapted"):
        if stage in metrics:
            click.echo(
                f"  {stage} perplexity: {metrics[stage]['perplexity']:.4f} over {metrics[stage]['tokens']:,} tokens"
            )
    if "train" in metrics:
        t = metrics["train"]
        kept = metrics.get("kept") or {"keep": "last", "step": t["steps"], "stopped_early": False}
        stopped = " (stopped early: no improvement)" if kept["stopped_early"] else ""
        click.echo(f"  trained: {t['steps']} steps{stopped}, {t['tokens']:,} tokens, {t['seconds']:.1f} s")
        # The adapted perplexity above is the kept step's, which need not be the last.
        which = "the best evaluation" if kept["keep"] == "best" else "the last step"
        click.echo(f"  kept: the adapter of step {kept['step']}, {which}")
    if info.manifest:
        click.echo(f"  base weights sha256: {info.manifest.base.weights_sha256}")
        click.echo(f"  tokenizer sha256: {info.manifest.base.tokenizer_sha256}")
    click.echo("  files:")
    for file_name, size in info.files.items():
        click.echo(f"    {file_name}  {_size(size)}")
    if info.recipe:
        click.echo("  recipe:")
        for line in info.recipe.splitlines():
            click.echo(f"    {line}")


@adapters.command("path")
@click.argument("name")
@store_option
def path(name: str, store: str | None) -> None:
    """Print the folder of an adapter, for scripts.

    Example: cd "$(gpt2-adapt adapters path wikitext103)"
    """
    click.echo(str(_store(store).require(name)))


@adapters.command("rm")
@click.argument("name")
@store_option
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def remove(name: str, store: str | None, yes: bool) -> None:
    """Delete an adapter and its checkpoints.

    Example: gpt2-adapt adapters rm old-run --yes
    """
    adapter_store = _store(store)
    folder = adapter_store.require(name)
    if not yes:
        click.confirm(f"delete adapter {name} ({folder})?", abort=True, err=True)
    adapter_store.remove(name)
    click.echo(f"deleted {name}", err=True)


@adapters.command("import")
@click.argument("source", type=click.Path(exists=True, file_okay=False))
@click.option("--name", help="Name in the store (default: the folder's name).")
@click.option(
    "--base", help="The base model (hub id or folder), when the adapter's config names none or a copy elsewhere."
)
@click.option("--overwrite", is_flag=True, help="Replace an adapter of the same name.")
@store_option
@json_option
def import_(source: str, name: str | None, base: str | None, overwrite: bool, store: str | None, as_json: bool) -> None:
    """Bring in a PEFT LoRA adapter trained elsewhere, checked against its base.

    Example: gpt2-adapt adapters import ~/downloads/gpt2-poems-lora --name poems
    """
    from ..store.importing import import_adapter

    adapter_store = _store(store)
    folder = import_adapter(source, adapter_store, name=name, base=base, overwrite=overwrite)
    if as_json:
        emit_json(adapter_store.info(folder.name).summary() | {"path": str(folder)})
    else:
        click.echo(str(folder))


def _short(text: str | None, width: int = 40) -> str:
    text = str(text or "-")
    return text if len(text) <= width else "..." + text[-(width - 3) :]


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _when(created: str | None) -> str:
    if not created:
        return "-"
    return datetime.datetime.fromisoformat(created).strftime("%Y-%m-%d %H:%M")
