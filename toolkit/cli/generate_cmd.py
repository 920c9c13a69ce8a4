"""`gpt2-adapt generate`: one prompt, a comparison, a mixed batch, or an interactive session.

Standard output carries the generated text alone; what was loaded and the tokens/s go to standard error.
"""

from __future__ import annotations

import itertools
import json
import shutil
import sys
import textwrap

import click

from ..errors import ToolkitError
from ..generation.settings import GenerationSettings
from .options import (
    allow_unverified_option,
    base_option,
    int8_option,
    nf4_option,
    precision_from_flags,
    precision_option,
    setting_options,
    settings_from,
    store_option,
)


@click.command()
@click.option(
    "--adapter",
    "adapters",
    multiple=True,
    metavar="NAME",
    help="An adapter in the store (repeatable: all load once, the first runs).",
)
@base_option
@click.option(
    "--model", metavar="ID_OR_DIR", help="A plain model to generate with, instead of adapters (hub id or folder)."
)
@click.option("--prompt", help="The prompt [default: --prompt-file, else standard input].")
@click.option(
    "--prompt-file",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Read the prompt from a file ('-': standard input).",
)
@setting_options(GenerationSettings)
@click.option(
    "--mix",
    metavar="A=W,B=W",
    help="Generate with the weighted sum of adapters' updates, e.g. wikitext103=0.7,poems=0.3.",
)
@click.option(
    "--compare",
    is_flag=True,
    help="Generate the prompt with the base and with each adapter (and the mix), side by side.",
)
@click.option(
    "--batch",
    "batch_path",
    type=click.Path(dir_okay=False, allow_dash=True),
    help='A JSONL file of {"prompt": ..., "adapter": ...} (null: the base), generated in one batch.',
)
@click.option("--interactive", "-i", is_flag=True, help="Read prompts and /adapter, /base, /mix commands line by line.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (adapter, prompt, text) instead of plain text.")
@precision_option()
@int8_option
@nf4_option
@allow_unverified_option
@store_option
def generate(
    adapters,
    base,
    model,
    prompt,
    prompt_file,
    mix,
    compare,
    batch_path,
    interactive,
    as_json,
    precision,
    int8,
    nf4,
    allow_unverified,
    store,
    **values,
) -> None:
    """Generate text with adapters, their base, or any GPT-2 model.

    Sampling is the default (--seed makes it reproducible); tokens stream to a terminal as they come.
    Examples:

    \b
        gpt2-adapt generate --adapter poems --prompt "The sea" --max-new-tokens 40 --seed 1
        gpt2-adapt generate --adapter wikitext103 --adapter poems --compare --prompt "The" --greedy
        gpt2-adapt generate --mix wikitext103=0.7,poems=0.3 --prompt "The"
        gpt2-adapt generate --batch requests.jsonl > out.jsonl
    """
    settings = settings_from(GenerationSettings, values)
    _check_modes(interactive, batch_path, compare, prompt, prompt_file, adapters, mix, as_json)
    from ..store.loading import require_model_or_adapters

    require_model_or_adapters(model, base, bool(adapters), bool(mix))
    strict = not allow_unverified
    precision = precision_from_flags(precision, int8, nf4)
    from ..generation import generate as generation
    from ..modeling.mixing import parse_weights
    from ..modeling.switching import active_adapter
    from ..store.store import AdapterStore

    requests = read_requests(batch_path) if batch_path else []
    if not interactive and not batch_path:
        prompt = _read_prompt(prompt, prompt_file)
    adapter_store = AdapterStore(store)
    names = list(dict.fromkeys([*adapters, *(a for _, a in requests if a)]))
    lm, tokenizer = generation.open_model(
        names,
        mix,
        base=base or model,
        store=adapter_store,
        strict=strict,
        precision=precision,
    )

    if interactive:
        from ..generation import interactive as session

        stdin = click.get_text_stream("stdin")
        session.prompt_loop(
            lm,
            tokenizer,
            settings,
            stdin,
            write=lambda text: click.echo(text, nl=False),
            tell=lambda text: click.echo(text, nl=False, err=True),
            store=adapter_store,
            strict=strict,
            stream=sys.stdout.isatty(),
            show_prompt=stdin.isatty(),
        )
    elif batch_path:
        _batch(lm, tokenizer, requests, settings)
    elif compare:
        contenders = [None, *(names or parse_weights(mix))] + ([active_adapter(lm)] if mix else [])
        _compare(lm, tokenizer, prompt, contenders, settings, as_json)
    else:
        _single(lm, tokenizer, prompt, settings, as_json)


def _single(lm, tokenizer, prompt: str, settings: GenerationSettings, as_json: bool) -> None:
    from ..generation import generate as generation
    from ..modeling.mixing import label
    from ..modeling.switching import active_adapter

    if sys.stdout.isatty() and settings.num_sequences == 1 and not as_json:
        generation.generate(lm, tokenizer, prompt, settings, stream=lambda text: click.echo(text, nl=False))
        return
    texts = generation.generate(lm, tokenizer, prompt, settings)
    if as_json:
        record = {"adapter": label(active_adapter(lm)), "prompt": prompt, "texts": texts}
        click.echo(json.dumps(record, indent=2, ensure_ascii=False))
    else:
        click.echo("\n\n".join(texts))


def _compare(lm, tokenizer, prompt: str, contenders: list, settings: GenerationSettings, as_json: bool) -> None:
    """One batch: the prompt once per contender (None: the base)."""
    from ..generation import generate as generation
    from ..modeling.mixing import label

    texts = generation.generate_batch(lm, tokenizer, [(prompt, name) for name in contenders], settings)
    n = settings.num_sequences
    rows = [(label(name), texts[i * n : (i + 1) * n]) for i, name in enumerate(contenders)]
    if as_json:
        records = [{"adapter": name, "prompt": prompt, "texts": row} for name, row in rows]
        click.echo(json.dumps(records, indent=2, ensure_ascii=False))
    else:
        width = shutil.get_terminal_size().columns if sys.stdout.isatty() else 0
        click.echo(_side_by_side([(name, "\n\n".join(row)) for name, row in rows], width))


def _batch(lm, tokenizer, requests: list, settings: GenerationSettings) -> None:
    """JSON lines, one per generated text, in request order."""
    from ..generation import generate as generation

    texts = generation.generate_batch(lm, tokenizer, requests, settings)
    for i, text in enumerate(texts):
        number = i // settings.num_sequences
        prompt, adapter = requests[number]
        click.echo(
            json.dumps({"request": number + 1, "adapter": adapter, "prompt": prompt, "text": text}, ensure_ascii=False)
        )


def _check_modes(interactive, batch_path, compare, prompt, prompt_file, adapters, mix, as_json) -> None:
    problems = []
    modes = [
        flag for flag, on in (("--interactive", interactive), ("--batch", batch_path), ("--compare", compare)) if on
    ]
    if len(modes) > 1:
        problems.append(f"{' and '.join(modes)}: choose one")
    if (interactive or batch_path) and (prompt is not None or prompt_file):
        problems.append(
            f"{modes[0]} reads its prompts {'line by line' if interactive else 'from the file'}; drop "
            "--prompt/--prompt-file"
        )
    if prompt is not None and prompt_file:
        problems.append("--prompt and --prompt-file: give one")
    if compare and not adapters and not mix:
        problems.append("--compare: name the adapters to compare with the base (--adapter NAME, repeatable, or --mix)")
    if interactive and as_json:
        problems.append("--json: not with --interactive")
    if problems:
        raise ToolkitError(*problems)


def _read_prompt(prompt: str | None, prompt_file: str | None) -> str:
    if prompt is not None:
        return prompt
    if not prompt_file:
        if click.get_text_stream("stdin").isatty():
            raise ToolkitError(
                "no prompt: give --prompt TEXT or --prompt-file PATH, pipe one on standard input, or use --interactive"
            )
        prompt_file = "-"
    label = "standard input" if prompt_file == "-" else prompt_file
    try:
        with click.open_file(prompt_file, encoding="utf-8") as f:
            text = f.read()
    except OSError as err:
        raise ToolkitError(f"--prompt-file: cannot read {label}: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise ToolkitError(f"--prompt-file: {label} is not UTF-8 text; give the prompt as a text file") from None
    return text.rstrip("\n")  # a file's final newline ends the file, not the prompt


def read_requests(path: str) -> list[tuple[str, str | None]]:
    """(prompt, adapter) pairs from a JSONL file ("-": standard input) of {"prompt": ..., "adapter": ...}
    objects; a missing or null adapter means the base."""
    label = "standard input" if path == "-" else path
    try:
        with click.open_file(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as err:
        raise ToolkitError(f"--batch: cannot read {label}: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise ToolkitError(f"--batch: {label} is not UTF-8 text; give a JSONL file of requests") from None
    requests, problems = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as err:
            problems.append(f"--batch {label} line {number}: not JSON ({err.msg}); write one object per line")
            continue
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
            problems.append(
                f'--batch {label} line {number}: needs a "prompt" string, e.g. {{"prompt": "The", "adapter": "poems"}}'
            )
            continue
        adapter = row.get("adapter")
        if adapter is not None and not isinstance(adapter, str):
            problems.append(f'--batch {label} line {number}: "adapter" must be an adapter name, or null for the base')
            continue
        unknown = sorted(set(row) - {"prompt", "adapter"})
        if unknown:
            problems.append(
                f'--batch {label} line {number}: unknown key(s) {", ".join(unknown)}; the keys are "prompt" '
                'and "adapter"'
            )
            continue
        requests.append((row["prompt"], adapter or None))
    if not problems and not requests:
        problems.append(f"--batch: {label} holds no requests")
    if problems:
        raise ToolkitError(*problems)
    return requests


def _side_by_side(columns: list[tuple[str, str]], width: int) -> str:
    """Labelled columns when the terminal is wide enough for them; otherwise (or in a pipe) labelled blocks."""
    gap = 3
    column_width = (width - gap * (len(columns) - 1)) // len(columns) if width else 0
    if column_width < 24:
        return "\n\n".join(f"== {name} ==\n{text}" for name, text in columns)
    wrapped = [[f" {name} ".center(column_width, "="), *textwrap.wrap(text, column_width)] for name, text in columns]
    return "\n".join(
        (" " * gap).join(line.ljust(column_width) for line in lines).rstrip()
        for lines in itertools.zip_longest(*wrapped, fillvalue="")
    )
