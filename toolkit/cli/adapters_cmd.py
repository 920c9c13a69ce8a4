"""`gpt2-adapt adapters ...`: list, show, path, rm and import adapters in the store."""

from __future__ import annotations

import datetime
import json

import click

from . import main, store_option


@main.group()
def adapters() -> None:
    """Manage the adapter store.

    Example: gpt2-adapt adapters list
    """


def _store(store: str | None):
    from ..store import AdapterStore

    return AdapterStore(store)


def summary(info: dict) -> dict:
    """One row of `adapters list`: what a person scans the store for."""
    manifest, metrics, config = info["manifest"], info["metrics"], info["adapter_config"]
    dataset = manifest.get("dataset", {})
    data = dataset.get("dataset") or ", ".join(dataset.get("train_files", [])) or dataset.get("imported_from", "")
    if dataset.get("config"):
        data += f" ({dataset['config']})"
    targets = config.get("target_modules") or []
    return {
        "name": info["name"],
        "base": manifest.get("base", {}).get("name") or config.get("base_model_name_or_path"),
        "dataset": data,
        "rank": config.get("r"),
        "targets": sorted(targets) if isinstance(targets, list) else targets,
        "bytes": info["bytes"],
        "base_perplexity": metrics.get("base", {}).get("perplexity"),
        "adapted_perplexity": metrics.get("adapted", {}).get("perplexity"),
        "created": manifest.get("created"),
    }


@adapters.command("list")
@store_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list for scripts.")
def list_adapters(store: str | None, as_json: bool) -> None:
    """List the adapters in the store, one row each.

    Example: gpt2-adapt adapters list --json
    """
    adapter_store = _store(store)
    rows = [summary(adapter_store.info(name)) for name in adapter_store.names()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no adapters in {adapter_store.root}", err=True)
        return
    table = [["NAME", "BASE", "DATASET", "RANK", "TARGETS", "SIZE", "PERPLEXITY", "CREATED"]]
    for r in rows:
        ppl = "-"
        if r["base_perplexity"] is not None and r["adapted_perplexity"] is not None:
            ppl = f"{r['base_perplexity']:.2f} -> {r['adapted_perplexity']:.2f}"
        targets = ",".join(r["targets"]) if isinstance(r["targets"], list) else str(r["targets"])
        table.append([r["name"], _short(r["base"]), _short(r["dataset"]), str(r["rank"]), targets,
                      _size(r["bytes"]), ppl, _when(r["created"])])
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


@adapters.command("show")
@click.argument("name")
@store_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def show(name: str, store: str | None, as_json: bool) -> None:
    """Everything the store knows of an adapter: recipe, metrics, provenance, files.

    Example: gpt2-adapt adapters show wikitext103
    """
    info = _store(store).info(name)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    row = summary(info)
    click.echo(f"{name}  ({info['path']})")
    for key in ("base", "dataset", "rank", "targets", "created"):
        click.echo(f"  {key}: {row[key]}")
    metrics = info["metrics"]
    for stage in ("base", "adapted"):
        if stage in metrics:
            click.echo(f"  {stage} perplexity: {metrics[stage]['perplexity']:.4f} over {metrics[stage]['tokens']:,} tokens")
    if "train" in metrics:
        t = metrics["train"]
        click.echo(f"  trained: {t['steps']} steps, {t['tokens']:,} tokens, {t['seconds']:.1f} s")
    base = info["manifest"].get("base", {})
    if base:
        click.echo(f"  base weights sha256: {base.get('weights_sha256')}")
        click.echo(f"  tokenizer sha256: {base.get('tokenizer_sha256')}")
    click.echo("  files:")
    for file_name, size in info["files"].items():
        click.echo(f"    {file_name}  {_size(size)}")
    if info["recipe"]:
        click.echo("  recipe:")
        for line in info["recipe"].splitlines():
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
@click.option("--base", help="The base model (hub id or folder), when the adapter's config names none or a copy elsewhere.")
@click.option("--overwrite", is_flag=True, help="Replace an adapter of the same name.")
@store_option
def import_(source: str, name: str | None, base: str | None, overwrite: bool, store: str | None) -> None:
    """Bring in a PEFT LoRA adapter trained elsewhere, checked against its base.

    Example: gpt2-adapt adapters import ~/downloads/gpt2-poems-lora --name poems
    """
    from ..importing import import_adapter

    folder = import_adapter(source, _store(store), name=name, base=base, overwrite=overwrite)
    click.echo(str(folder))


def _short(text: str | None, width: int = 40) -> str:
    text = str(text or "-")
    return text if len(text) <= width else "..." + text[-(width - 3):]


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
