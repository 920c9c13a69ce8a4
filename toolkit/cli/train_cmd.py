"""`gpt2-adapt train`."""

from __future__ import annotations

import click

from ..distributed import is_main_process
from .options import emit_json, json_option, overrides_option, store_option
from .plan_cmd import plan


@click.command()
@click.argument("recipe_path", metavar="RECIPE", type=click.Path(dir_okay=False))
@overrides_option
@store_option
@click.option(
    "--resume", is_flag=True, help="Continue the run from its newest checkpoint (start fresh if there is none)."
)
@click.option(
    "--overwrite", is_flag=True, help="Retrain an adapter that exists; the old one stays until the new one is saved."
)
@click.option("--allow-changed", is_flag=True, help="With --resume: continue even if the recipe, data or base changed.")
@click.option(
    "--threads",
    type=int,
    metavar="N",
    help="CPU threads to train with: short for --set training.threads=N (0: chosen from the machine's load).",
)
@click.option("--dry-run", is_flag=True, help="Train nothing: print what `gpt2-adapt plan` prints.")
@json_option
@click.pass_context
def train(
    ctx,
    recipe_path: str,
    overrides: tuple[str, ...],
    store: str | None,
    resume: bool,
    overwrite: bool,
    allow_changed: bool,
    threads: int | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Train a LoRA adapter from a recipe and save it in the store.

    Prints the base and adapted perplexity. Example:

        gpt2-adapt train recipes/wikitext2.toml --set training.max_steps=200
    """
    if threads is not None:
        overrides = (*overrides, f"training.threads={threads}")
    if dry_run:
        ctx.invoke(plan, recipe_path=recipe_path, overrides=overrides, as_json=as_json)
        return
    from ..config.recipe import load_recipe
    from ..store.store import AdapterStore
    from ..training.run import train as run_training

    recipe = load_recipe(recipe_path, overrides)
    result = run_training(recipe, AdapterStore(store), resume=resume, overwrite=overwrite, allow_changed=allow_changed)
    if not is_main_process():  # under torchrun, rank 0 reports for all
        return
    m = result.metrics
    if as_json:
        emit_json({"name": result.name, "path": str(result.path), "trained": result.trained, **m.to_json()})
        return
    click.echo(f"adapter {result.name}: {result.path}")
    click.echo(
        f"perplexity: base {m.base.perplexity:.3f} -> adapted {m.adapted.perplexity:.3f} "
        f"({m.adapted.tokens:,} tokens, {m.protocol.label}, {m.ran})"
    )
    t = m.train
    stopped = " (stopped early: no improvement)" if m.kept and m.kept.stopped_early else ""
    click.echo(
        f"trained {t.steps} steps{stopped}, {t.tokens:,} tokens in {t.seconds:.1f} s "
        f"({t.tokens_per_second:,.0f} tokens/s)"
    )
    if m.kept and m.kept.keep == "best":
        click.echo(f"kept the adapter of step {m.kept.step}, the best evaluation")
