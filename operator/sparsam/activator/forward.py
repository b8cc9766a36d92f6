"""One attempt at forwarding a request to one backend, and what its failures mean.

The distinction that matters is whether the backend can have seen the request. A connection
that was never established (refused: nothing listens yet, which on the dev cluster happens
between a pod turning Ready and the process behind its IP listening; or a connect timeout) means
it was not sent, so the caller may send it elsewhere or again: `NotSentError`. Once sent, a
failure is the backend's answer to that one request and is not retried, because the request may
not be idempotent: `UpstreamError` (502) or `UpstreamTimeoutError` (504).

Responses are read whole before they are passed on, so a backend that dies half-way through its
answer becomes a clean 502 rather than a truncated 200. Model-server answers are small JSON
documents; streaming responses would need their own path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

# RFC 9110 section 7.6.1, plus the old names proxies still see; with Host and Content-Length,
# which the client library sets for the new connection and body.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_NOT_FORWARDED = HOP_BY_HOP | {"host", "content-length", "expect"}
_NOT_RETURNED = HOP_BY_HOP | {"content-length"}
# Headers in which a client claims to be someone (somewhere) else; only a trusted proxy's count.
_CLIENT_IDENTITY = frozenset({"forwarded", "x-real-ip"})
# Headers aiohttp's client would add when the client did not send them: the backend gets what
# the client sent, no more (an Accept-Encoding the client never asked for would have the backend
# compress an answer the client may not decode).
_NOT_ADDED = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")


class NotSentError(Exception):
    """No connection to the backend: the request was not sent, so it may be sent elsewhere."""


class UpstreamError(Exception):
    """The request was sent and the exchange failed (reset, closed mid-answer): 502."""


class UpstreamTimeoutError(Exception):
    """The backend did not answer in time: 504."""


@dataclass(frozen=True)
class Reply:
    status: int
    headers: CIMultiDict[str]
    body: bytes


def forwarded_headers(
    headers: Mapping[str, str] | CIMultiDictProxy[str],
    *,
    remote: str | None,
    host: str | None,
    scheme: str = "http",
    trusted: bool = False,
) -> CIMultiDict[str]:
    """The client's headers as the backend gets them: without hop-by-hop headers (and those the
    Connection header names), with X-Forwarded-For/-Host/-Proto saying who asked and where.

    A client can write anything in those headers, so the activator sets them itself: only when
    `trusted` (the peer is a proxy the operator named) does it keep the proxy's
    X-Forwarded-Host/-Proto and append the peer to its X-Forwarded-For. Otherwise the client's
    own are dropped, with ``Forwarded``, ``X-Real-IP`` and every other ``X-Forwarded-*``."""
    out = CIMultiDict[str]()
    named = _connection_tokens(headers)
    for name, value in headers.items():
        lower = name.lower()
        if lower in _NOT_FORWARDED or lower in named:
            continue
        if not trusted and (lower in _CLIENT_IDENTITY or lower.startswith("x-forwarded-")):
            continue
        out.add(name, value)
    previous = ", ".join(out.popall("X-Forwarded-For", []))
    if remote:
        out["X-Forwarded-For"] = f"{previous}, {remote}" if previous else remote
    elif previous:
        out["X-Forwarded-For"] = previous
    if host and "X-Forwarded-Host" not in out:
        out["X-Forwarded-Host"] = host
    if "X-Forwarded-Proto" not in out:
        out["X-Forwarded-Proto"] = scheme
    return out


def returned_headers(headers: Mapping[str, str] | CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """The backend's response headers as the client gets them."""
    named = _connection_tokens(headers)
    out = CIMultiDict[str]()
    for name, value in headers.items():
        lower = name.lower()
        if lower not in _NOT_RETURNED and lower not in named:
            out.add(name, value)
    return out


def _connection_tokens(headers: Mapping[str, str] | CIMultiDictProxy[str]) -> set[str]:
    tokens: set[str] = set()
    if isinstance(headers, CIMultiDictProxy | CIMultiDict):
        values = headers.getall("Connection", [])
    else:
        values = [v for k, v in headers.items() if k.lower() == "connection"]
    for value in values:
        tokens.update(token.strip().lower() for token in value.split(",") if token.strip())
    return tokens


async def send(
    session: aiohttp.ClientSession,
    address: str,
    method: str,
    path_qs: str,
    headers: CIMultiDict[str],
    body: bytes | bytearray,
    timeout: aiohttp.ClientTimeout,
) -> Reply:
    """Send one request to ``http://{address}{path_qs}`` (path and query already encoded) and
    read the whole reply."""
    url = URL(f"http://{address}{path_qs}", encoded=True)
    try:
        async with session.request(
            method,
            url,
            headers=headers,
            data=body or None,
            skip_auto_headers=_NOT_ADDED,
            allow_redirects=False,
            timeout=timeout,
        ) as response:
            data = await response.read()
            return Reply(response.status, returned_headers(response.headers), data)
    except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as error:
        raise NotSentError(f"{address}: {error}") from error
    except (TimeoutError, aiohttp.ServerTimeoutError) as error:
        raise UpstreamTimeoutError(f"{address}: no answer in time") from error
    except aiohttp.ClientError as error:
        raise UpstreamError(f"{address}: {type(error).__name__}: {error}") from error
