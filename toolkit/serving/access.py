"""One access-log line per request, written when its response ends (a stream's too), and the request
counter of the metrics, labelled by route, model and status. Plain ASGI middleware: it sees a streamed
response through to its end without buffering it.

Whatever a client sent is logged through `printable`: a path holding "%0a" must not start a line of its
own that reads like another request."""

from __future__ import annotations

import logging
import time

from .metrics import Metrics

log = logging.getLogger("toolkit.serving.access")
LOGGED_CHARS = 200  # of a client's text in a log line


def printable(text: str, limit: int = LOGGED_CHARS) -> str:
    """`text` with every control character escaped (\\n as \\\\n, ...) and cut to `limit` characters."""
    escaped = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:limit])
    return escaped + ("..." if len(text) > limit else "")


class AccessLog:
    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = 500  # unless a response starts

        async def watch(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            model = scope.get("state", {}).get("model", "-")  # set by the routes that run a model
            client = "{}:{}".format(*tuple(scope["client"])) if scope.get("client") else "-"
            log.info(
                '%s "%s %s" %d %.3fs model=%s',
                client,
                printable(scope["method"]),
                printable(scope["path"]),
                status,
                time.perf_counter() - started,
                printable(str(model)),
            )
            self.metrics.requests.labels(route, model, str(status)).inc()
