"""Bounds on what a client can make the server hold: the time to send a request's headers and its body,
and the body's size, all enforced before any route reads the request.

uvicorn bounds neither the time a client takes to send its headers (a socket that trickles a header
byte at a time stays open for good) nor a body's size or pace, so both are written here: a protocol that
closes a connection whose request headers have not all arrived in `read_timeout` seconds, and an ASGI
middleware that reads the body first, answering 413 past `max_body` bytes and 408 when it has not all
arrived `read_timeout` seconds after the headers.

A body refused as too large is still read to its end (and thrown away as it comes, for at most
`read_timeout` seconds) before the 413 is sent: a client that sends its whole body before reading the
answer would otherwise meet a closed connection instead of the 413 (a lingering close, RFC 9112 9.6).
"""

from __future__ import annotations

import asyncio
import contextlib

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .errors import BodyTooLarge, RequestTimeout, ServingError, response


def guarded_protocol(read_timeout: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol, closing connections that take longer than `read_timeout` to send headers."""

    class HeadersInTime(H11Protocol):
        _headers_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._wait_for_headers()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._wait_for_headers()  # the next request on a kept-alive connection gets the same time

        def handle_events(self) -> None:
            super().handle_events()
            if self._headers_timer is not None and self.conn.their_state is not h11.IDLE:
                self._headers_timer.cancel()  # the headers are in (or the connection is over)
                self._headers_timer = None

        def connection_lost(self, exc) -> None:
            if self._headers_timer is not None:
                self._headers_timer.cancel()
            super().connection_lost(exc)

        def _wait_for_headers(self) -> None:
            if self._headers_timer is not None:
                self._headers_timer.cancel()
            self._headers_timer = self.loop.call_later(read_timeout, self._too_slow)

        def _too_slow(self) -> None:
            self._headers_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

    return HeadersInTime


class BodyLimit:
    """Reads each request's body before the app does, within `max_body` bytes and `read_timeout` seconds."""

    def __init__(self, app, max_body: int, read_timeout: float):
        self.app, self.max_body, self.read_timeout = app, max_body, read_timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_body:
            await self._discard(receive)
            return await self._refuse(scope, receive, send, self._too_large(int(declared)))
        chunks, size = [], 0
        try:
            async with asyncio.timeout(self.read_timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return  # the client left before sending its body: nobody to answer
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_body:
                        if message.get("more_body", False):
                            await self._discard(receive)
                        return await self._refuse(scope, receive, send, self._too_large(size, sent=True))
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            return await self._refuse(
                scope,
                receive,
                send,
                RequestTimeout(
                    f"the request's body did not arrive within {self.read_timeout:g} s (the server's read timeout)"
                ),
            )
        body = b"".join(chunks)
        given = False

        async def replay():
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # from here: the client leaving

        await self.app(scope, replay, send)

    async def _discard(self, receive) -> None:
        """Read what is left of a refused body, keeping none of it, for at most read_timeout seconds."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.read_timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect" or not message.get("more_body", False):
                        return

    def _too_large(self, size: int, sent: bool = False) -> BodyTooLarge:
        return BodyTooLarge(
            f"the request's body has {'more than ' if sent else ''}{size} bytes; this server takes at "
            f"most {self.max_body} (its max body); send fewer or shorter prompts"
        )

    @staticmethod
    async def _refuse(scope, receive, send, error: ServingError):
        error.headers["Connection"] = "close"  # the body may not have been read to its end: no next request
        scope.setdefault("state", {})["model"] = "-"
        await response(error)(scope, receive, send)
