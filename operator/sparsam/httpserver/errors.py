"""The JSON error middleware of sparsam's HTTP servers.

Handlers raise `RequestError` for what the client must change (or retry later); aiohttp's own
refusals (unknown path, wrong method, body too large, a body that does not decode) are
`web.HTTPException`s or `HttpProcessingError`s. All become ``{"error": "..."}`` with their status
and one log line at INFO: a client's mistake is not the server's, and a traceback per malformed
request would let any client flood the log. Anything else is a fault of the server: 500, with
its traceback in the log, and never in the answer.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Middleware

__all__ = ["Handler", "Middleware", "RequestError", "error_response", "json_errors", "refuse"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Headers of aiohttp's own refusals that tell the client what to do next.
_KEPT_HEADERS = ("Allow", "Retry-After")


class RequestError(Exception):
    """Answer `status` with ``{"error": message}``: the request cannot be served as sent."""

    def __init__(
        self,
        status: int,
        message: str,
        headers: Mapping[str, str] | None = None,
        *,
        close_connection: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})
        #: Close the connection after the answer: the rest of the body is not worth reading.
        self.close_connection = close_connection


def error_response(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def json_errors(logger: logging.Logger, internal_error: str) -> Middleware:
    """The middleware: `logger` gets the one-line refusals and the tracebacks of faults;
    `internal_error` is the message of a 500 (it should say where the details are)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except RequestError as error:
            response = refuse(logger, request, error.status, error.message, error.headers)
            if error.close_connection:
                response.force_close()
            return response
        except web.HTTPException as error:
            if error.status < 400:
                raise
            headers = {name: error.headers[name] for name in _KEPT_HEADERS if name in error.headers}
            return refuse(
                logger,
                request,
                error.status,
                f"{request.method} {request.path}: {error.reason}",
                headers,
            )
        except (HttpProcessingError, web.RequestPayloadError) as error:
            # A body aiohttp could not decode (bad gzip, broken chunked encoding), read by a
            # handler without `body.read_body`. Nothing more can be read from it: marking it
            # ended spares aiohttp a lingering read that would log the error with a traceback.
            request.content.feed_eof()
            cause = error.__cause__ or error
            message = getattr(cause, "message", "") or str(cause) or type(cause).__name__
            return refuse(logger, request, 400, f"the request body cannot be read: {message}")
        except Exception:
            logger.exception("unhandled error in %s %s", request.method, request.path)
            return error_response(500, internal_error)

    return middleware


def refuse(
    logger: logging.Logger,
    request: web.Request,
    status: int,
    message: str,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """Answer `status` with `message` and log it as one line (the client's address included, so
    an abusive client can be found)."""
    logger.info(
        "%s %s from %s: %d %s",
        request.method,
        request.path,
        request.remote or "?",
        status,
        _one_line(message),
    )
    return error_response(status, message, headers)


def _one_line(message: str, limit: int = 300) -> str:
    """`message` as one bounded line: a client chooses what goes into it."""
    flat = " ".join(message.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
