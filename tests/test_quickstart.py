"""`make quickstart` shows what an adapter does, and the README's tour of commands runs as written after it.

The quickstart's commands are read from the Makefile and run in this process, in a fresh folder, as a user
would run them: `gpt2-adapt train recipes/quickstart.toml` on the pretrained builtin base, then the same
prompt completed by the base and by the adapter.
"""

import json
import re
import shlex
import shutil

import pytest
from click.testing import CliRunner
from conftest import REPO

from toolkit.cli import main

pytestmark = pytest.mark.slow


def quickstart_commands() -> list[list[str]]:
    """The gpt2-adapt commands of the Makefile's quickstart target, variables filled in."""
    makefile = (REPO / "Makefile").read_text()
    variables = dict(re.findall(r"^(\w+) \?= (.*)$", makefile, re.MULTILINE))
    target = re.search(r"^quickstart:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE).group(1).replace("\\\n", " ")
    commands = []
    for line in target.splitlines():
        line = re.sub(r"\$\((\w+)\)", lambda m: variables.get(m.group(1), m.group(0)), line.strip())
        words = shlex.split(line)
        if words and words[0].endswith("/gpt2-adapt"):
            commands.append(words[1:])
    return commands


@pytest.fixture(scope="module")
def quickstart(builtin_base, tmp_path_factory):
    """A folder where `make quickstart` has run: (folder, cache, the result of each command)."""
    folder = tmp_path_factory.mktemp("quickstart")
    shutil.copytree(REPO / "recipes", folder / "recipes")
    cache = builtin_base.parent.parent  # the shared cache: the base is built, python-code written once
    outputs = []
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.delenv("GPT2_ADAPT_STORE", raising=False)  # the default store, ./adapters
        patch.setenv("GPT2_ADAPT_CACHE", str(cache))
        for command in quickstart_commands():
            result = CliRunner().invoke(main, command, catch_exceptions=False)
            assert result.exit_code == 0, result.output
            outputs.append(result)
    return folder, cache, outputs


def test_make_quickstart_adapts_the_base_and_shows_the_difference(quickstart):
    folder, _, (trained, compared) = quickstart
    metrics = json.loads((folder / "adapters" / "quickstart" / "metrics.json").read_text())
    base, adapted = metrics["base"]["perplexity"], metrics["adapted"]["perplexity"]
    assert adapted < 0.75 * base, (base, adapted)  # a clear margin, not noise
    assert base < 1024  # a pretrained base: below its vocabulary's size even on a domain it never saw
    assert re.search(r"perplexity: base [\d.]+ -> adapted [\d.]+", trained.output)
    blocks = dict(re.findall(r"== (\w+) ==\n(.*?)(?=\n== |\Z)", compared.stdout, re.DOTALL))
    assert set(blocks) == {"base", "quickstart"}, compared.stdout
    assert blocks["base"].strip() and blocks["quickstart"].strip()
    assert blocks["base"].strip() != blocks["quickstart"].strip()


def test_the_readme_tour_runs_as_written(quickstart, monkeypatch):
    """After `make quickstart`, every command of the README's tour, in that folder: each exits 0."""
    folder, cache, _ = quickstart
    block = re.search(r"## A tour of the commands\n.*?```bash\n(.*?)```", (REPO / "README.md").read_text(), re.DOTALL)
    assert block, "the README has no tour of the commands"
    monkeypatch.chdir(folder)
    monkeypatch.delenv("GPT2_ADAPT_STORE")  # the tour uses the default store, ./adapters
    monkeypatch.setenv("GPT2_ADAPT_CACHE", str(cache))
    runner = CliRunner()
    lines = [line.split("  #")[0].strip() for line in block.group(1).splitlines() if line.strip()]
    assert len(lines) >= 8
    for line in lines:
        words = shlex.split(line)
        assert words[0] == "gpt2-adapt"
        result = runner.invoke(main, ["-q", *words[1:]], catch_exceptions=False)
        assert result.exit_code == 0, f"{line}\n{result.output}"
