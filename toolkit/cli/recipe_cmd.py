"""`gpt2-adapt recipe ...`."""

from __future__ import annotations

import click

from . import main, overrides_option


@main.group()
def recipe() -> None:
    """Inspect recipes.

    Example: gpt2-adapt recipe show recipes/quickstart.toml
    """


@recipe.command("show")
@click.argument("recipe_path", metavar="RECIPE", type=click.Path(dir_okay=False))
@overrides_option
def recipe_show(recipe_path: str, overrides: tuple[str, ...]) -> None:
    """Print the resolved, validated recipe as TOML (every key, defaults filled in).

    Example: gpt2-adapt recipe show recipes/wikitext103.toml --set lora.r=8
    """
    from ..recipe import load_recipe

    click.echo(load_recipe(recipe_path, overrides).to_toml(), nl=False)
