"""`gpt2-adapt serve` refuses bad settings with one `error:` line each and exit 2, before it listens."""

import pytest
from helpers import error_lines

from toolkit.errors import ToolkitError

from .servers import free_socket


@pytest.mark.parametrize(
    "args, line",
    [
        (["--max-batch", "0"], "error: --max-batch: must be at least 1 (got 0)"),
        (["--max-queue", "0", "--timeout", "0"], "error: --max-queue: must be at least 1 (got 0)"),
        (["--port", "70000"], "error: --port: must be between 1 and 65535 (got 70000)"),
        (["--api-key", " "], "error: --api-key: is empty; give a key, or none to leave the server open"),
        (
            ["--preload", "a00", "--preload", "a01", "--max-loaded", "1"],
            "error: --preload: 2 adapters, more than --max-loaded (1) can keep; preload fewer or raise the limit",
        ),
    ],
)
def test_bad_settings_are_refused(cli, args, line):
    result = cli("serve", *args)
    assert result.exit_code == 2
    assert line in error_lines(result.stderr)


def test_what_cannot_be_served_is_refused_before_listening(cli, tmp_path, many_adapters):
    empty = cli("serve", "--store", tmp_path / "empty")
    assert empty.exit_code == 2
    assert error_lines(empty.stderr) == [
        (
            f"error: nothing to serve: the store {tmp_path / 'empty'} holds no adapter that records its base; "
            "train one into it, point --store at another store, or name the model with --base"
        )
    ]
    ghost = cli("serve", "--store", many_adapters, "--preload", "ghost")
    assert ghost.exit_code == 2
    assert error_lines(ghost.stderr)[0].startswith("error: --preload: no adapter named 'ghost' in")
    with free_socket() as taken:
        taken.listen()
        port = taken.getsockname()[1]
        busy = cli("serve", "--store", many_adapters, "--port", port)
    assert busy.exit_code == 2
    assert error_lines(busy.stderr)[0].startswith(f"error: --port: cannot listen on 127.0.0.1:{port} (")


def test_every_server_setting_is_an_option_declared_once():
    """The options are derived from ServerSettings: each field is an option with the field's help, and
    what is given on the command line is what the settings hold."""
    from dataclasses import fields

    import click

    from toolkit.cli.options import settings_from
    from toolkit.cli.serve_cmd import serve
    from toolkit.serving.settings import ServerSettings

    options = {p.name: p for p in serve.params if isinstance(p, click.Option)}
    for f in fields(ServerSettings):
        assert f.name in options, f"--{f.name.replace('_', '-')} is not an option of serve"
        if f.name not in ("store", "precision"):  # shared options, spelled once for every command
            assert options[f.name].help == f.metadata["help"]
            if f.default not in (None, ()):
                assert options[f.name].default == f.default
    context = serve.make_context(
        "serve",
        ["--max-body", "2048", "--read-timeout", "2.5", "--preload", "a", "--preload", "b", "--max-loaded", "3"],
    )
    settings = settings_from(ServerSettings, context.params)
    assert (settings.max_body, settings.read_timeout, settings.preload, settings.max_loaded) == (
        2048,
        2.5,
        ("a", "b"),
        3,
    )
    assert isinstance(settings.max_body, int) and isinstance(settings.read_timeout, float)


@pytest.mark.parametrize(
    "args, line",
    [
        (["--max-body", "0"], "error: --max-body: must be at least 1 (got 0)"),
        (["--read-timeout", "0"], "error: --read-timeout: must be a number of seconds > 0 (got 0.0)"),
    ],
)
def test_bad_limits_are_refused(cli, args, line):
    result = cli("serve", *args)
    assert result.exit_code == 2
    assert line in error_lines(result.stderr)


def test_the_served_base_is_chosen_by_manifests_only(store, tiny_model):
    """Adapters copied in by hand, without a manifest, are refused by the server: they must not choose its
    base, even when they outnumber the verified ones (their peft config names another base)."""
    import json
    import shutil

    from toolkit.serving.catalog import choose_base
    from toolkit.store.store import AdapterStore

    adapters = AdapterStore(store)
    for name in ("copy1", "copy2", "copy3", "copy4", "copy5"):
        folder = store / name
        shutil.copytree(store / "poems", folder)
        (folder / "manifest.json").unlink()
        config = json.loads((folder / "adapter_config.json").read_text())
        (folder / "adapter_config.json").write_text(json.dumps(config | {"base_model_name_or_path": "gpt2"}))
    assert adapters.base_for(["copy1", "copy2", "quickstart"]).name == "gpt2"  # what a non-strict load uses
    assert choose_base(adapters, None).name == str(tiny_model)
    for name in ("quickstart", "poems", "poems8", "elsewhere"):
        shutil.rmtree(store / name)
    with pytest.raises(ToolkitError, match="nothing to serve"):
        choose_base(adapters, None)
