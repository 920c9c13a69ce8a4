"""`gpt2-adapt train`."""

from __future__ import annotations

import os

import click

from . import main, overrides_option, store_option


@main.command()
@click.argument("recipe_path", metavar="RECIPE", type=click.Path(dir_okay=False))
@overrides_option
@store_option
@click.option("--resume", is_flag=True, help="Continue from the newest checkpoint (start fresh if there is none).")
@click.option("--overwrite", is_flag=True, help="Retrain an adapter that exists; the old one stays until the new one is saved.")
@click.option("--force", is_flag=True, help="With --resume: continue even if the recipe, data or base changed.")
@click.option("--dry-run", is_flag=True, help="Train nothing: print what `gpt2-adapt plan` prints.")
@click.pass_context
def train(ctx, recipe_path: str, overrides: tuple[str, ...], store: str | None, resume: bool, overwrite: bool,
          force: bool, dry_run: bool) -> None:
    """Train a LoRA adapter from a recipe and save it in the store.

    Prints the base and adapted perplexity. Example:

        gpt2-adapt train recipes/wikitext2.toml --set training.max_steps=200
    """
    if dry_run:
        from .plan_cmd import plan

        ctx.invoke(plan, recipe_path=recipe_path, overrides=overrides)
        return
    from ..recipe import load_recipe

    recipe = load_recipe(recipe_path, overrides)
    from ..store import AdapterStore
    from ..train import train as run_training

    result = run_training(recipe, AdapterStore(store), resume=resume, overwrite=overwrite, force=force)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 reports for all
        return
    m = result.metrics
    protocol = m.get("protocol", {})
    click.echo(f"adapter {result.name}: {result.path}")
    click.echo(
        f"perplexity: base {m['base']['perplexity']:.3f} -> adapted {m['adapted']['perplexity']:.3f} "
        f"({m['adapted']['tokens']:,} tokens, disjoint blocks of {protocol.get('context')}, {m.get('precision', 'fp32')})"
    )
    t = m["train"]
    click.echo(
        f"trained {t['steps']} steps, {t['tokens']:,} tokens in {t['seconds']:.1f} s "
        f"({t['tokens_per_second']:,.0f} tokens/s)"
    )
