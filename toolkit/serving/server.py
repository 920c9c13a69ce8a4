"""`toolkit.serve(...)`: the app under uvicorn until SIGTERM or Ctrl-C.

On either signal uvicorn stops accepting connections, lets the requests in flight finish (at most `grace`
seconds), then the app's shutdown stops the batcher; the process exits 0.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading

from ..errors import ToolkitError, param
from .app import create_app
from .settings import ServerSettings

log = logging.getLogger(__name__)


def serve(settings: ServerSettings | None = None, **fields) -> None:
    """Serve the store's adapters on settings.host:settings.port (127.0.0.1:8000 by default); returns when
    the server has shut down. Bad settings, and a base or preloaded adapter that cannot be loaded, raise
    ToolkitError before anything listens."""
    import uvicorn

    settings = settings or ServerSettings(**fields)
    _check_port(settings.host, settings.port)  # before the model loads, not after
    app = create_app(settings)
    app.state.service.open()  # before listening: a bad base or adapter is reported, not logged by uvicorn
    config = uvicorn.Config(app, host=settings.host, port=settings.port, access_log=False,
                            timeout_graceful_shutdown=settings.grace, log_level="info")
    server = uvicorn.Server(config)
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
