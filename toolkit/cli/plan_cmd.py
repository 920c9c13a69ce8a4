"""`gpt2-adapt plan`: what a recipe will cost before it runs."""

from __future__ import annotations

import click

from .options import emit_json, json_option, overrides_option


@click.command()
@click.argument("recipe_path", metavar="RECIPE", type=click.Path(dir_okay=False))
@overrides_option
@click.option(
    "--measure-steps",
    default=3,
    show_default=True,
    type=click.IntRange(min=0),
    help="Training steps to time (0: no timing).",
)
@json_option
def plan(recipe_path: str, overrides: tuple[str, ...], as_json: bool, measure_steps: int = 3) -> None:
    """Parameter counts, adapter size, memory per base precision, tokens, padding and a time estimate for a recipe.

    Loads the model's config (not its weights) for the counts, packs the data (cached for the run),
    and times a few steps on random tokens. Example:

        gpt2-adapt plan recipes/wikitext103.toml --set quantization.mode=int8
    """
    from ..config.recipe import load_recipe
    from ..training.plan import plan as make_plan

    result = make_plan(load_recipe(recipe_path, overrides), measure_steps=measure_steps)
    if as_json:
        emit_json(result)
        return
    p = result["parameters"]
    click.echo(f"model: {result['model']} on {result['device']}")
    click.echo(f"parameters: {p['total']:,} total, {p['trainable']:,} trainable ({100 * p['share']:.3f}%)")
    click.echo(f"adapter on disk: {_mb(result['adapter_bytes'])}")
    click.echo(
        f"tokens: {result['tokens_per_epoch']:,} per epoch, {result['tokens_per_step']:,} per step, "
        f"{result['steps']:,} steps; evaluation scores {result['eval_tokens']:,} tokens"
    )
    if "examples" in result:
        e = result["examples"]
        cut = f"; {e['truncated']:,} prompts cut to fit" if e["truncated"] else ""
        click.echo(
            f"examples: {e['train']:,} in {e['blocks']:,} blocks, {100 * e['padding']:.1f}% of their positions "
            f"padding{cut}"
        )
    measured, fp32 = result.get("measured_memory_bytes", {}), result["memory_bytes"]["fp32"]
    outside = result["memory_outside_fit"]
    for precision, size in result["memory_bytes"].items():
        share = "" if precision == "fp32" or outside else f" ({100 * size / fp32:.0f}% of fp32)"
        if precision in outside:
            share += (
                f" (mostly its fixed part, fitted on {result['memory_fitted_on']}: a model this small is "
                "outside the range where the estimate holds)"
            )
        seen = f"; measured over the timed steps: {_mb(measured[precision])}" if precision in measured else ""
        click.echo(f"memory with a {precision} base: about {_mb(size)}{share}{seen}")
    if "seconds_per_step" in result:
        click.echo(
            f"time: {result['seconds_per_step']:.3f} s per step measured, about "
            f"{_duration(result['estimated_seconds'])} for the run (evaluation not included)"
        )


def _mb(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _duration(seconds: float) -> str:
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours} h {rest // 60} min" if hours else f"{rest // 60} min {rest % 60} s"
