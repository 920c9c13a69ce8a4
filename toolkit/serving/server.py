"""`toolkit.serve(...)`: the app under uvicorn until SIGTERM or Ctrl-C.

On either signal uvicorn stops accepting connections and lets the requests in flight finish, for at most
`grace` seconds; then it would close what is left, answering a request that has no response yet with its
own plain-text 500 and cutting a stream short. So shortly before that (`drain_at`), the batcher ends
whatever is still in flight with the documented 503 (a stream: an error event, then [DONE]); then the
app's shutdown stops the batcher, and the process exits 0.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading

from ..errors import ToolkitError, param
from .app import create_app
from .limits import guarded_protocol
from .settings import ServerSettings

log = logging.getLogger(__name__)


def serve(settings: ServerSettings | None = None, **fields) -> None:
    """Serve the store's adapters on settings.host:settings.port (127.0.0.1:8000 by default); returns when
    the server has shut down. Bad settings, and a base or preloaded adapter that cannot be loaded, raise
    ToolkitError before anything listens."""
    settings = settings or ServerSettings(**fields)
    _check_port(settings.host, settings.port)  # before the model loads, not after
    app = create_app(settings)
    app.state.service.open()  # before listening: a bad base or adapter is reported, not logged by uvicorn
    server = uvicorn_server(app, settings, host=settings.host, port=settings.port, log_level="info")
    # uvicorn shuts down gracefully on SIGTERM and Ctrl-C, then raises the signal again for the handler it
    # found: with Python's defaults the process would die of SIGTERM or raise KeyboardInterrupt. A stop
    # that was asked for is a normal end: exit status 0.
    with _signals_end_quietly():
        try:
            server.run()
        except KeyboardInterrupt:
            pass
        finally:
            app.state.service.close()
    log.info("stopped")


def drain_at(grace: float) -> float:
    """Seconds into the grace period at which what is still in flight is ended with 503: early enough for
    the answers to be written before uvicorn closes the connections at `grace`."""
    return grace - min(1.0, grace / 2)


def uvicorn_server(app, settings: ServerSettings, **config):
    """A uvicorn.Server for the app, with the server's bounds on clients (limits.py) and its shutdown."""
    import uvicorn

    class Server(uvicorn.Server):
        async def shutdown(self, sockets=None):
            app.state.service.drain(drain_at(settings.grace))
            await super().shutdown(sockets)

    return Server(
        uvicorn.Config(
            app,
            access_log=False,
            timeout_graceful_shutdown=settings.grace,
            http=guarded_protocol(settings.read_timeout),
            **config,
        )
    )


def _check_port(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as err:
            raise ToolkitError(
                f"{param('port')}: cannot listen on {host}:{port} ({err.strerror or err}); choose another port "
                f"({param('port')}), or stop what listens there"
            ) from None


@contextlib.contextmanager
def _signals_end_quietly():
    if threading.current_thread() is not threading.main_thread():  # only the main thread owns signals
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
