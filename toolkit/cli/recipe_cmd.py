"""`gpt2-adapt recipe ...`."""

from __future__ import annotations

import click

from .options import emit_json, json_option, overrides_option


@click.group()
def recipe() -> None:
    """Inspect recipes.

    Example: gpt2-adapt recipe show recipes/quickstart.toml
    """


@recipe.command("show")
@click.argument("recipe_path", metavar="RECIPE", type=click.Path(dir_okay=False))
@overrides_option
@json_option
def recipe_show(recipe_path: str, overrides: tuple[str, ...], as_json: bool) -> None:
    """Print the resolved, validated recipe as TOML (every key, defaults filled in).

    Example: gpt2-adapt recipe show recipes/wikitext103.toml --set lora.r=8
    """
    from ..config.recipe import load_recipe

    loaded = load_recipe(recipe_path, overrides)
    if as_json:
        emit_json(loaded.to_dict())
    else:
        click.echo(loaded.to_toml(), nl=False)
