"""`gpt2-adapt serve`."""

from __future__ import annotations

import click

from ..serving.settings import API_KEY_ENV, ServerSettings
from .options import base_option, int8_option, precision_option, resolve_precision_flags, store_option

DEFAULTS = ServerSettings.__dataclass_fields__


def _default(name: str):
    return DEFAULTS[name].default


@click.command()
@store_option
@base_option
@click.option("--host", default=_default("host"), show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", type=int, default=_default("port"), show_default=True, help="Port to listen on.")
@click.option("--api-key", envvar=API_KEY_ENV, show_envvar=True,
              help="Require `Authorization: Bearer KEY` on every route but /health.")
@click.option("--max-loaded", type=int, default=_default("max_loaded"), show_default=True,
              help="Adapters (and mixes) kept in memory; the least recently used is unloaded first.")
@click.option("--max-batch", type=int, default=_default("max_batch"), show_default=True,
              help="Sequences generated together in one forward pass.")
@click.option("--max-queue", type=int, default=_default("max_queue"), show_default=True,
              help="Sequences waiting for a place in the batch; beyond it requests get 429.")
@click.option("--timeout", type=float, default=_default("timeout"), show_default=True,
              help="Seconds a request may take, queueing included; then its generation is stopped (408).")
@click.option("--grace", type=float, default=_default("grace"), show_default=True,
              help="Seconds SIGTERM or Ctrl-C waits for the requests in flight.")
@click.option("--threads", type=int, default=_default("threads"), show_default=True,
              help="CPU threads the model computes with; 0: chosen from the cores and their load at start.")
@precision_option()
@int8_option
@click.option("--preload", multiple=True, metavar="NAME", help="Load (and verify) this adapter at start-up (repeatable).")
def serve(store, base, host, port, api_key, max_loaded, max_batch, max_queue, timeout, grace, threads, precision,
          int8, preload) -> None:
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

    settings = ServerSettings(
        store=store, base=base, host=host, port=port, api_key=api_key, max_loaded=max_loaded, max_batch=max_batch,
        max_queue=max_queue, timeout=timeout, grace=grace, precision=resolve_precision_flags(precision, int8),
        preload=preload, threads=threads,
    )
    run(settings)
