"""`toolkit.serve(...)`: the app under uvicorn until SIGTERM or Ctrl-C.

On either signal uvicorn stops accepting connections, lets the requests in flight finish (at most `grace`
seconds), then the app's shutdown stops the batcher; the process exits 0.
"""

from __future__ import annotations

import logging

from .app import create_app
from .settings import ServerSettings

log = logging.getLogger(__name__)


def serve(settings: ServerSettings | None = None, **fields) -> None:
    """Serve the store's adapters on settings.host:settings.port (127.0.0.1:8000 by default); returns when
    the server has shut down. Bad settings, and a base or preloaded adapter that cannot be loaded, raise
    ToolkitError before anything listens."""
    import uvicorn

    settings = settings or ServerSettings(**fields)
    app = create_app(settings)
    app.state.service.open()  # before listening: a bad base or adapter is reported, not logged by uvicorn
    config = uvicorn.Config(app, host=settings.host, port=settings.port, access_log=False,
                            timeout_graceful_shutdown=settings.grace, log_level="info")
    server = uvicorn.Server(config)
    try:
        server.run()
    finally:
        app.state.service.close()
    log.info("stopped")
