"""Reading a request body within bounds of size and time.

aiohttp's ``request.read()`` bounds the size but not the time: a client that trickles its body
a byte at a time holds the handler, its buffer and its connection for as long as it likes. Here
the body must keep coming: a chunk at least every `BodyLimits.idle_timeout` seconds, and after
`BodyLimits.grace` seconds at least `BodyLimits.min_rate` bytes a second on average (a legitimate
client on a slow link still gets its 16 MiB through; one that sends 1 byte a second does not).
Too slow is 408, too large 413 (as soon as Content-Length says so, before a byte is read), a
body that does not decode (bad gzip, broken chunks) 400.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from sparsam.httpserver.errors import RequestError


@dataclass(frozen=True)
class BodyLimits:
    max_bytes: int = 16 * 1024 * 1024
    #: Longest wait for the next chunk of a body.
    idle_timeout: float = 10.0
    #: Least average rate (bytes a second) once `grace` seconds have passed; 0: none.
    min_rate: float = 16 * 1024
    grace: float = 5.0


def too_large(limits: BodyLimits) -> RequestError:
    return RequestError(
        413, f"request body is larger than {limits.max_bytes} bytes", close_connection=True
    )


async def read_body(
    request: web.Request,
    limits: BodyLimits,
    reserve: Callable[[int], None] = lambda size: None,
) -> bytearray:
    """The whole body of `request`, or RequestError (408, 413).

    `reserve(n)` is called before `n` more bytes are kept (with the whole Content-Length at once
    when the client sent one), so the caller can account for the memory and refuse by raising;
    whatever it reserved stays reserved when this raises: the caller releases it.
    """
    length = request.content_length
    if length is not None and length > limits.max_bytes:
        raise too_large(limits)
    loop = asyncio.get_running_loop()
    started = loop.time()
    reserved = 0
    if length:
        reserve(length)
        reserved = length
    body = bytearray()
    # Each turn reads at least one byte or ends, and the size is bounded: the loop ends.
    while True:
        now = loop.time()
        wait = limits.idle_timeout
        if limits.min_rate > 0:
            # Past this moment, the bytes so far fall below the least average rate.
            wait = min(wait, started + limits.grace + len(body) / limits.min_rate - now)
        if wait <= 0:
            raise _too_slow(limits, len(body), now - started)
        try:
            async with asyncio.timeout(wait):
                chunk = await request.content.readany()
        except TimeoutError:
            raise _too_slow(limits, len(body), loop.time() - started) from None
        except web.RequestPayloadError as error:
            # A body that does not decode: broken chunked encoding, or a Content-Encoding
            # (gzip, deflate) whose data is not what it says. Nothing more can be read: marking the
            # stream ended spares aiohttp its lingering read, which would log the same error
            # again with a traceback.
            request.content.feed_eof()
            raise RequestError(
                400, f"the request body cannot be read: {_cause(error)}", close_connection=True
            ) from None
        if not chunk:
            return body
        if len(body) + len(chunk) > limits.max_bytes:
            raise too_large(limits)
        if len(body) + len(chunk) > reserved:
            reserve(len(body) + len(chunk) - reserved)
            reserved = len(body) + len(chunk)
        body += chunk


def _cause(error: BaseException) -> str:
    """The innermost message of aiohttp's wrapped payload errors."""
    while error.__cause__ is not None and str(error.__cause__).strip():
        error = error.__cause__
    text = str(error).strip()
    return text.removeprefix("400, message:").strip() or type(error).__name__


def _too_slow(limits: BodyLimits, received: int, seconds: float) -> RequestError:
    rate = (
        f", and at least {limits.min_rate:g} bytes/s after {limits.grace:g}s"
        if limits.min_rate
        else ""
    )
    return RequestError(
        408,
        f"the request body came too slowly ({received} bytes in {seconds:.1f}s); send a chunk at "
        f"least every {limits.idle_timeout:g}s{rate}",
        close_connection=True,
    )
