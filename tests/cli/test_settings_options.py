"""Commands whose options are derived from a settings record (toolkit.config.fields.setting): each field is
one option, declared once, with the field's help and default, and what the command line gives is what the
record holds. (serve's: tests/serving/test_serve_cli.py.)"""

from dataclasses import fields

import click
import pytest

from toolkit.cli.eval_cmd import eval_cmd
from toolkit.cli.generate_cmd import generate
from toolkit.cli.options import settings_from
from toolkit.cli.vocabulary import option
from toolkit.errors import spell_parameters
from toolkit.evaluation.settings import EvalOptions
from toolkit.generation.settings import GenerationSettings

# command: (its settings record, fields whose option several commands share, fields no option of their own sets)
COMMANDS = {
    "eval": (eval_cmd, EvalOptions, {"threads", "precision"}, {"strict", "progress"}),
    "generate": (generate, GenerationSettings, set(), set()),
}


@pytest.mark.parametrize("name", COMMANDS)
def test_every_setting_is_an_option_declared_once(name):
    command, record, shared, unset = COMMANDS[name]
    options = [p for p in command.params if isinstance(p, click.Option)]
    spellings = [spelling for p in options for spelling in p.opts + p.secondary_opts]
    assert sorted(spellings) == sorted(set(spellings)), "an option is declared twice"
    by_name = {p.name: p for p in options}
    for f in fields(record):
        if f.name in unset:
            assert f.name not in by_name
            continue
        assert by_name[f.name].opts == ["--" + f.name.replace("_", "-")], f"{f.name} is not an option of {name}"
        if f.name not in shared:
            assert by_name[f.name].help == spell_parameters(f.metadata["help"], option)
            assert by_name[f.name].default == f.default
            assert by_name[f.name].is_flag == isinstance(f.default, bool)


def test_the_command_line_gives_the_settings_their_types():
    context = eval_cmd.make_context(
        "eval", ["--limit", "3", "--context", "32", "--by-document", "--batch-size", "2", "--as-text", "--threads", "1"]
    )
    settings = settings_from(EvalOptions, context.params)
    assert (settings.limit, settings.context, settings.by_document, settings.batch_size, settings.as_text) == (
        3,
        32,
        True,
        2,
        True,
    )
    assert (settings.stride, settings.max_tokens, settings.threads, settings.strict) == (None, None, 1, True)

    context = generate.make_context("generate", ["--max-new-tokens", "7", "--greedy", "--top-p", "0.5", "--seed", "3"])
    settings = settings_from(GenerationSettings, context.params)
    assert (settings.max_new_tokens, settings.greedy, settings.top_p, settings.seed) == (7, True, 0.5, 3)
    assert isinstance(settings.seed, int) and isinstance(settings.top_p, float)


def test_a_setting_names_parameters_as_the_command_line_spells_them():
    """The library's help names `text_column`; eval's help says --text-column."""
    as_text = next(p for p in eval_cmd.params if p.name == "as_text")
    assert "(--text-column, every token)" in as_text.help and "\x00" not in as_text.help
