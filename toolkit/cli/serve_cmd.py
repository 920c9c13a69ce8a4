"""`gpt2-adapt serve`: its options are ServerSettings' fields (toolkit/serving/settings.py)."""

from __future__ import annotations

import logging
import os
import sys

import click

from ..serving.settings import ServerSettings
from .options import int8_option, precision_from_flags, precision_option, setting_options, settings_from, store_option


@click.command()
@setting_options(ServerSettings, store=store_option, precision=precision_option())
@int8_option
def serve(int8: bool, **values) -> None:
    """Serve every adapter in the store behind one OpenAI-compatible endpoint.

    A request's `model` picks an adapter, the base, or a mix "a=0.7,b=0.3"; requests in flight together
    are generated together, each with its own adapter. Adapters load on first use and a retrained one is
    served at its new version without a restart. GET / is a page to try them side by side. Examples:

    \b
        gpt2-adapt serve
        gpt2-adapt serve --store adapters --port 8080 --api-key secret --preload wikitext103
        curl localhost:8000/v1/completions -H 'Content-Type: application/json' \\
             -d '{"model": "wikitext103", "prompt": "The", "max_tokens": 20}'
    """
    from ..serving.server import serve as run

    values["precision"] = precision_from_flags(values["precision"], int8)
    run(settings_from(ServerSettings, values))
    # Stopped cleanly: the worker, the model and the connections are closed. What is left is the interpreter
    # tearing down torch and its threads, which takes seconds on a busy machine and would push the exit past
    # the grace period a supervisor allows; the output is flushed, and the process ends here.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
