"""The documentation is true: every Python example runs as written (the README's tour of commands: in
test_quickstart.py), the recipe reference is the one the code generates, and every link points at a file that exists.
An example that disappears fails its test; it is never skipped."""

import re
import shutil
from pathlib import Path

import pytest
from conftest import REPO

from toolkit.config import reference

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# Every `# example: NAME` block, where it lives, and what its output must show.
EXAMPLES = {
    "readme": ("README.md", r"'quickstart'\]"),
    "python-api": ("docs/store.md", r"quickstart \d+\.\d+ -> \d+\.\d+"),
    "train": ("docs/training.md", r"quick-python \d+\.\d+ -> \d+\.\d+"),
    "generate": ("docs/generation.md", r"\S"),
    "mix": ("docs/generation.md", r"mix-[0-9a-f]{16} "),
    "mixed-batch": ("docs/generation.md", r"quickstart '.*'\npoems '.*'\nbase '.*'"),
    "merge": ("docs/generation.md", r"merged/mix fp32 \d"),
    "export": ("docs/export.md", r"adapter.gguf base.gguf merged.gguf \[True, True, True\]"),
    "evaluate": (
        "docs/evaluation.md",
        (
            r"base \d+\.\d+ \d+ disjoint\nquickstart \d+\.\d+ \d+ disjoint\nquickstart \d+\.\d+ \d+ "
            r"disjoint\nquickstart \d+ 6 True"
        ),
    ),
    "serve": ("docs/serving.md", r"'poems', 'poems8', 'quickstart'\]\n[1-8]\n"),
}
EXAMPLE = re.compile(r"```python\n# example: ([\w-]+)\n(.*?)```", re.DOTALL)


def examples_in(path: Path) -> dict[str, str]:
    return {name: code for name, code in EXAMPLE.findall(path.read_text())}


def test_every_example_is_listed_and_found_where_it_is_listed():
    found = {name: path.relative_to(REPO).as_posix() for path in DOCS for name in examples_in(path)}
    assert found == {name: file for name, (file, _) in EXAMPLES.items()}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_each_example_runs_as_written(name, store, tmp_path, monkeypatch, capsys):
    """Against a store holding 'quickstart' and 'poems', in a folder where `recipes/` is the repository's."""
    file, shows = EXAMPLES[name]
    code = examples_in(REPO / file)[name]
    shutil.copytree(REPO / "recipes", tmp_path / "recipes")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GPT2_ADAPT_STORE", str(store))
    exec(compile(code, f"{file} (example {name})", "exec"), {"__name__": f"example_{name}"})
    printed = capsys.readouterr().out
    assert re.search(shows, printed), printed


def test_the_recipe_reference_is_the_generated_one():
    text = (REPO / "docs" / "recipes.md").read_text()
    assert reference.section(text) == f"{reference.BEGIN}\n{reference.table()}\n{reference.END}", (
        "docs/recipes.md is stale: run `python -m toolkit.config.reference write`"
    )


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_links_point_at_files_that_exist(path):
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text())
    local = [link for link in links if not re.match(r"\w+://", link)]
    assert [link for link in local if not (path.parent / link).exists()] == []
