"""A cap on open connections and a deadline for a request's headers.

aiohttp reads headers for as long as a client takes to send them, and accepts every connection
it is offered: a few hundred clients that trickle their headers a byte at a time hold as many
connections, and their buffers, for ever. `GuardedSite` listens like ``web.TCPSite`` with each
connection's protocol wrapped:

- over `ConnectionLimits.max_connections` open connections, a new one is answered 503 with
  Retry-After and closed before anything is read from it;
- a request's headers must be complete within `ConnectionLimits.header_timeout` seconds of its
  first byte (of the connection's opening, for the first request); otherwise 408 and the
  connection is closed. While a handler runs the deadline does not apply (the body has its own,
  `body.read_body`), and an idle keep-alive connection is aiohttp's to close
  (``keepalive_timeout``).

The `middleware` tells the guard when a request's handler starts and ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from sparsam.httpserver.errors import Handler

#: Reasons a connection is cut, as `ConnectionGuard.on_cut` gets them.
TOO_MANY = "too_many_connections"
HEADERS_TOO_SLOW = "header_timeout"


def _raw_answer(status: str, message: str, extra: str = "") -> bytes:
    body = ('{"error": "' + message + '"}').encode()
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json; charset=utf-8\r\n{extra}"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


_BUSY = _raw_answer(
    "503 Service Unavailable", "too many open connections; retry shortly", "Retry-After: 1\r\n"
)
_LATE = _raw_answer("408 Request Timeout", "the request headers came too slowly")


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int = 1000
    header_timeout: float = 10.0


class ConnectionGuard:
    """Counts a server's open connections and cuts those over the cap or too slow to ask."""

    def __init__(
        self, limits: ConnectionLimits, on_cut: Callable[[str], None] = lambda reason: None
    ) -> None:
        self.limits = limits
        self.on_cut = on_cut
        self._open: dict[asyncio.BaseTransport, _GuardedProtocol] = {}

    @property
    def open(self) -> int:
        return len(self._open)

    def wrap(self, factory: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        return lambda: _GuardedProtocol(self, factory())

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        guarded = self._open.get(request.transport) if request.transport is not None else None
        if guarded is None:  # served by another site (a test server)
            return await handler(request)
        guarded.handling(True)
        try:
            return await handler(request)
        finally:
            guarded.handling(False)


class _GuardedProtocol(asyncio.Protocol):
    """Passes everything to aiohttp's protocol and watches the time headers take."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self._guard = guard
        self._inner = inner
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._busy = False
        self._refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        if self._guard.open >= self._guard.limits.max_connections:
            self._refused = True
            self._guard.on_cut(TOO_MANY)
            transport.write(_BUSY)
            transport.close()
            return
        self._transport = transport
        self._guard._open[transport] = self
        self._inner.connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if not self._busy and self._timer is None:
            self._arm()
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return None if self._refused else self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._refused:
            return
        if self._transport is not None:
            self._guard._open.pop(self._transport, None)
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if not self._refused:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if not self._refused:
            self._inner.resume_writing()

    def handling(self, busy: bool) -> None:
        """A handler starts (True) or ends (False): the header deadline is met, and the next one
        starts with the next request's first byte."""
        self._busy = busy
        self._disarm()

    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._guard.limits.header_timeout, self._late)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _late(self) -> None:
        self._timer = None
        if self._busy or self._transport is None or self._transport.is_closing():
            return
        self._guard.on_cut(HEADERS_TOO_SLOW)
        self._transport.write(_LATE)
        self._transport.close()


class GuardedSite(web.TCPSite):
    """``web.TCPSite`` whose connections `guard` watches."""

    __slots__ = ("_guard",)

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, guard: ConnectionGuard
    ) -> None:
        super().__init__(runner, host, port)
        self._guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self._guard.wrap(server), self._host, self._port, backlog=self._backlog
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port
