"""The interactive loop of `gpt2-adapt generate`: each line is a prompt or a command, and switching adapters
never reloads the base.

A command that fails says why and the loop goes on; only /quit or the end of input stops it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ..errors import ToolkitError
from ..modeling.mixing import label, mix, parse_weights
from ..modeling.switching import active_adapter, loaded_adapters, use
from ..store.loading import load_adapter
from ..store.store import AdapterStore
from .generate import generate
from .settings import GenerationSettings

HELP = """commands:
  /adapter NAME       generate with NAME (loaded from the store, verified, the first time)
  /base               generate with the base alone
  /mix A=0.7,B=0.3    generate with the weighted sum of adapters' updates
  /adapters           what is loaded, and what runs
  /help               this list
  /quit               stop (so does the end of input)
anything else is a prompt."""


def prompt_loop(
    model,
    tokenizer,
    settings: GenerationSettings,
    lines: Iterable[str],
    *,
    write: Callable[[str], None],
    tell: Callable[[str], None],
    store: AdapterStore | None = None,
    strict: bool = True,
    stream: bool = False,
    show_prompt: bool = False,
) -> None:
    """Read `lines` until /quit or their end. Generated text goes to `write`, everything else (the
    prompt marker, what a command did, errors) to `tell`; `stream` writes text as it is generated."""
    store = store or AdapterStore()
    lines = iter(lines)
    while True:
        current = active_adapter(model)
        if show_prompt:
            tell(f"[{label(current)}]> ")
        line = next(lines, None)
        if line is None:
            return
        line = line.strip()
        if not line:
            continue
        command, _, argument = line.partition(" ")
        argument = argument.strip()
        try:
            if command in ("/quit", "/exit"):
                return
            elif command == "/help":
                tell(HELP + "\n")
            elif command == "/adapters":
                loaded = [label(n) for n in loaded_adapters(model)]
                tell(f"loaded: {', '.join(loaded) or 'none'}; running: {label(current)}\n")
            elif command == "/base":
                use(model, None)
                tell("base\n")
            elif command == "/adapter":
                if not argument or " " in argument:
                    raise ToolkitError("/adapter: name one adapter, e.g. /adapter poems")
                model = load_adapter(model, tokenizer, argument, store=store, strict=strict)
                use(model, argument)
                tell(f"adapter {argument}\n")
            elif command == "/mix":
                weights = parse_weights(argument, label="/mix")
                for name in weights:
                    model = load_adapter(model, tokenizer, name, store=store, strict=strict)
                tell(f"{label(mix(model, weights))}\n")
            elif command.startswith("/"):
                raise ToolkitError(f"unknown command {command}; /help lists them")
            else:
                _generate(model, tokenizer, line, settings, write, stream)
        except ToolkitError as err:
            for problem in err.problems:
                tell(f"error: {problem}\n")


def _generate(model, tokenizer, prompt: str, settings, write, stream: bool) -> None:
    if stream and settings.num_sequences == 1:
        generate(model, tokenizer, prompt, settings, stream=write)  # ends with a newline
        return
    texts = generate(model, tokenizer, prompt, settings)
    write("\n\n".join(texts) + "\n")
