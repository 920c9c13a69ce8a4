"""The `gpt2-adapt` group: logging, and one way every command ends on bad input.

A ToolkitError becomes one line per problem on standard error (parameters spelled as this command line's
options) and its exit code (2); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

import click

from .. import __version__
from ..distributed import is_main_process
from ..errors import ToolkitError
from ..threads import prepare_openmp
from .vocabulary import option, removed


def echo_error(problem: str) -> None:
    click.echo(click.style("error:", fg="red", bold=True) + f" {problem}", err=True)


class ToolkitGroup(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ToolkitError as err:
            for problem in err.spelled(option):
                echo_error(problem)
            ctx.exit(err.exit_code)
        except click.UsageError as err:
            if isinstance(err, click.exceptions.NoArgsIsHelpError):  # a bare group: its help is the answer
                raise
            # A sub-command's bad arguments read like every other error: one line, with where to look.
            command = err.ctx.command_path if err.ctx else ctx.command_path
            gone = isinstance(err, click.NoSuchOption) and err.ctx and removed(err.ctx.command.name, err.option_name)
            message = gone or err.format_message().rstrip(".")
            echo_error(f"{message}; run `{command} -h` for its usage")
            ctx.exit(err.exit_code)


def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO
    if not is_main_process():  # under torchrun, one process speaks for all
        level = max(level, logging.WARNING)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    toolkit_log = logging.getLogger("toolkit")
    toolkit_log.handlers[:] = [handler]
    toolkit_log.setLevel(level)
    toolkit_log.propagate = False
    if verbosity <= 0:
        # The libraries' notices (8-bit casts, kernel hints, deprecations) are noise for a user; -v shows them.
        warnings.filterwarnings("ignore")
        for name in ("transformers", "peft", "bitsandbytes", "datasets", "accelerate", "evaluate"):
            logging.getLogger(name).setLevel(logging.ERROR)
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("DATASETS_VERBOSITY", "error")
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        # The variables above are read at import; a library already imported (the Python API, tests) is told.
        if "datasets" in sys.modules:
            sys.modules["datasets"].disable_progress_bars()
        if "transformers" in sys.modules:
            sys.modules["transformers"].utils.logging.disable_progress_bar()


@click.group(cls=ToolkitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gpt2-adapt")
@click.option("-v", "--verbose", count=True, help="Show more (the libraries' own messages too).")
@click.option("-q", "--quiet", count=True, help="Show only warnings and errors.")
def main(verbose: int, quiet: int) -> None:
    """LoRA adapters for GPT-2-family models, trained from TOML recipes.

    Example: gpt2-adapt train recipes/quickstart.toml
    """
    _setup_logging(verbose - quiet)
    # Before any command imports torch: OpenMP's threads then sleep at barriers instead of spinning, which on
    # a busy machine made training several times slower (docs/speed.md).
    prepare_openmp()
