"""The activator's HTTP application: routing, holding, forwarding, and its own endpoints.

``/<namespace>/<name>/<rest>`` goes to ``/<rest>`` (query string included) on a ready replica
of that InferenceService, round-robin. With no ready replica, the request is held (see hold.py)
and a wake-up is asked for. A request that could not be sent (connection refused) is tried on
the next replica, and again after a short pause, until the hold timeout; so is one a replica
answered 503 with Retry-After (a model server still loading: it did not run the request), with
one request probing a loading replica while the others wait for its news. One that was sent
and failed is answered 502 and never retried, because it may not be idempotent.

Every answer of the activator's own is JSON ``{"error": "..."}``; nothing ever sends a
traceback.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from sparsam.activator.backends import Backends, ServiceKey, valid_key
from sparsam.activator.budget import BufferFullError, ByteBudget, Claim
from sparsam.activator.forward import (
    NotSentError,
    Reply,
    UpstreamError,
    UpstreamTimeoutError,
    forwarded_headers,
    send,
)
from sparsam.activator.hold import HoldQueues, HoldTimeoutError, QueueFullError, wait_ready
from sparsam.activator.metrics import CONTENT_TYPE_LATEST, ActivatorMetrics
from sparsam.activator.wake import ServiceNotFoundError, ThrottledWaker
from sparsam.httpserver.body import BodyLimits, read_body
from sparsam.httpserver.errors import Middleware, RequestError, error_response, json_errors

__all__ = ["ACTIVATOR", "Activator", "ActivatorConfig", "build_app", "error_response"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

logger = logging.getLogger(__name__)

#: Retry-After (seconds) of a 503 after the hold timeout: the service is still coming up.
RETRY_AFTER_TIMEOUT = 5
#: Retry-After of a 503 for a full hold queue: room frees up as held requests are released.
RETRY_AFTER_FULL = 1
#: Retry-After of a 503 for a full byte budget: held requests are answered within the hold
#: timeout at the latest, forwarded ones usually much sooner.
RETRY_AFTER_BUFFERS = 1
#: The refusal reasons counted by sparsam_activator_refused_total, by the status refused with.
_REFUSED_BY_STATUS = {408: "body_too_slow", 413: "body_too_large", 400: "body_unreadable"}
#: Longest a request waits for another's probe of a loading backend before it looks again.
WAIT_FOR_PROBE = 1.0


@dataclass(frozen=True)
class ActivatorConfig:
    hold_timeout: float = 60.0
    max_held: int = 1000
    #: How often a held request asks (through the throttle) for its service to be woken.
    wake_interval: float = 1.0
    #: Pause before trying backends again that all refused the connection.
    retry_delay: float = 0.05
    #: Pause before the one request probing a backend that answered 503 with Retry-After
    #: (loading) tries it again; the others wait for the probe's news (see `_Loading`), so a
    #: crowd of held requests never hammers a server busy loading its model.
    unavailable_delay: float = 0.02
    connect_timeout: float = 2.0
    upstream_timeout: float = 300.0
    max_request_bytes: int = 16 * 1024 * 1024
    #: Request bytes kept in memory (held or being forwarded) per service and in all. With
    #: Python's overhead on top, the total fits the chart's 512 Mi limit beside the ~100 MB the
    #: process needs itself.
    max_buffered_bytes_per_service: int = 64 * 1024 * 1024
    max_buffered_bytes: int = 160 * 1024 * 1024
    #: A request body must send a chunk at least this often, and average `body_min_rate`
    #: bytes a second after `body_grace` seconds; else 408.
    body_timeout: float = 10.0
    body_min_rate: float = 16 * 1024
    body_grace: float = 5.0
    #: Peers whose X-Forwarded-For/-Host/-Proto are kept (and extended); nobody's by default.
    trusted_proxies: tuple[Network, ...] = ()


class Activator:
    """What the handlers share: the backends' view, the waker, the hold queues, the client
    session and the metrics."""

    def __init__(
        self,
        backends: Backends,
        waker: ThrottledWaker,
        config: ActivatorConfig,
        metrics: ActivatorMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backends = backends
        self.waker = waker
        self.config = config
        self.metrics = metrics or ActivatorMetrics()
        self.clock = clock
        self.queues = HoldQueues(config.max_held, self.metrics)
        self.budget = ByteBudget(config.max_buffered_bytes_per_service, config.max_buffered_bytes)
        self._body_limits = BodyLimits(
            max_bytes=config.max_request_bytes,
            idle_timeout=config.body_timeout,
            min_rate=config.body_min_rate,
            grace=config.body_grace,
        )
        self._turn: dict[ServiceKey, int] = {}
        self._stop_holding_at = math.inf
        self._stopping = asyncio.Event()
        self._timeout = aiohttp.ClientTimeout(
            total=config.upstream_timeout, sock_connect=config.connect_timeout
        )
        self._session: aiohttp.ClientSession | None = None
        #: Backends that answered 503 with Retry-After (loading), by address: set once one
        #: answers anything else. One request (the first to see the 503) probes; the others
        #: wait for the event instead of sending more.
        self._loading: dict[str, asyncio.Event] = {}

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1024, limit_per_host=256),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=self._timeout,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def stop_holding(self, within: float) -> None:
        """Shutting down: held requests get their 503 within `within` seconds at the latest,
        so they are answered before the process must exit."""
        self._stop_holding_at = min(self._stop_holding_at, self.clock() + within)
        self._stopping.set()

    def rotation(self, key: ServiceKey, addresses: Sequence[str]) -> list[str]:
        """`addresses` starting at this service's next turn: round-robin across requests."""
        turn = self._turn.get(key, 0)
        self._turn[key] = turn + 1
        start = turn % len(addresses)
        return [*addresses[start:], *addresses[:start]]

    def trusts(self, remote: str | None) -> bool:
        """Whether `remote` is one of the trusted proxies."""
        if not remote or not self.config.trusted_proxies:
            return False
        try:
            address = ipaddress.ip_address(remote)
        except ValueError:
            return False
        return any(address in network for network in self.config.trusted_proxies)

    async def handle(self, request: web.Request, key: ServiceKey, path_qs: str) -> web.Response:
        claim = self.budget.claim(key)
        try:
            body = await self._read(request, key, claim)
            return await self._forward(request, key, path_qs, body)
        finally:
            claim.release()
            self.metrics.buffered(key, self.budget.used_by(key))

    async def _read(self, request: web.Request, key: ServiceKey, claim: Claim) -> bytearray:
        """The body, its bytes claimed from the budget; refusals are counted and raised."""

        def reserve(size: int) -> None:
            claim.reserve(size)
            self.metrics.buffered(key, self.budget.used_by(key))

        try:
            return await read_body(request, self._body_limits, reserve)
        except BufferFullError as error:
            self.metrics.refused(key, f"buffer_full_{error.scope}")
            raise RequestError(
                503,
                f"{error}; retry shortly",
                {"Retry-After": str(RETRY_AFTER_BUFFERS)},
                close_connection=True,
            ) from None
        except RequestError as error:
            self.metrics.refused(key, _REFUSED_BY_STATUS.get(error.status, str(error.status)))
            raise

    async def _forward(
        self, request: web.Request, key: ServiceKey, path_qs: str, body: bytearray
    ) -> web.Response:
        headers = forwarded_headers(
            request.headers,
            remote=request.remote,
            host=request.host,
            scheme=request.scheme,
            trusted=self.trusts(request.remote),
        )
        arrived = self.clock()

        def deadline() -> float:
            return min(arrived + self.config.hold_timeout, self._stop_holding_at)

        hold = self.queues.hold(key, self.clock)
        unavailable: Reply | None = None
        probing: set[str] = set()  # loading backends this request probes
        try:
            while True:
                addresses = await wait_ready(
                    key, self.backends, self.waker, hold, deadline, self.clock, self._stopping
                )
                delay = self.config.retry_delay
                waits: list[asyncio.Event] = []
                refused = False
                for address in self.rotation(key, addresses):
                    loading = self._loading.get(address)
                    if loading is not None and address not in probing:
                        waits.append(loading)  # someone else probes it
                        continue
                    sent_at = self.clock()
                    reply = await self._attempt(address, request.method, path_qs, headers, body)
                    if reply is None:
                        refused = True
                        continue
                    if reply.status == 503 and "Retry-After" in reply.headers:
                        unavailable = reply
                        if address in probing:
                            delay = self.config.unavailable_delay
                        elif address in self._loading:  # another request probes it already
                            waits.append(self._loading[address])
                        else:  # the first to see it loading probes it
                            self._loading[address] = asyncio.Event()
                            probing.add(address)
                            delay = self.config.unavailable_delay
                        continue
                    self._loaded(address, probing)
                    hold.leave(at=sent_at)
                    return _response(reply)
                if self.clock() >= deadline():
                    raise HoldTimeoutError
                hold.enter()
                left = max(deadline() - self.clock(), 0)
                if waits and not probing and not refused:
                    # Only loading backends, probed by others: wait for their news, and look
                    # again now and then (a new replica may turn ready meanwhile).
                    await _first_of(waits, pause=min(WAIT_FOR_PROBE, left))
                else:
                    await asyncio.sleep(min(delay, left))
        except HoldTimeoutError:
            if unavailable is not None:
                return _response(unavailable)
            return error_response(
                503,
                f"no replica of InferenceService {key[0]}/{key[1]} became ready within "
                f"{self.config.hold_timeout:g}s; it may still be starting, retry later",
                {"Retry-After": str(RETRY_AFTER_TIMEOUT)},
            )
        except QueueFullError as error:
            return error_response(
                503,
                f"InferenceService {key[0]}/{key[1]} has no ready replica and {error}; "
                "retry shortly",
                {"Retry-After": str(RETRY_AFTER_FULL)},
            )
        except ServiceNotFoundError as error:
            return error_response(404, str(error))
        except UpstreamTimeoutError as error:
            logger.warning("%s/%s: %s", *key, error)
            return error_response(
                504, f"the replica did not answer within {self.config.upstream_timeout:g}s"
            )
        except UpstreamError as error:
            logger.warning("%s/%s: %s", *key, error)
            return error_response(
                502, "the replica failed while answering; see the activator's log"
            )
        finally:
            # A probe that gives up (timeout, client gone) hands over: its waiters go again,
            # and the first of them to see a 503 probes next.
            for address in list(probing):
                self._loaded(address, probing)
            hold.finish(self.metrics)

    def _loaded(self, address: str, probing: set[str]) -> None:
        """`address` answered something other than "loading" (or its probe gave up)."""
        event = self._loading.pop(address, None)
        if event is not None:
            event.set()
        probing.discard(address)

    async def _attempt(
        self,
        address: str,
        method: str,
        path_qs: str,
        headers: CIMultiDict[str],
        body: bytearray,
    ) -> Reply | None:
        """The reply of `address`, or None when it could not be sent there."""
        assert self._session is not None, "Activator.start() was not awaited"
        try:
            return await send(self._session, address, method, path_qs, headers, body, self._timeout)
        except NotSentError as error:
            logger.debug("not sent: %s", error)
            return None


ACTIVATOR = web.AppKey("activator", Activator)


async def _first_of(events: Sequence[asyncio.Event], pause: float) -> None:
    """Return when any of `events` is set, or after `pause` seconds."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=pause, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def _response(reply: Reply) -> web.Response:
    return web.Response(status=reply.status, headers=reply.headers, body=reply.body)


def split_path(raw_path: str) -> tuple[ServiceKey, str] | None:
    """``/ns/name/rest...`` -> ((ns, name), "/rest..."); ``/ns/name`` -> ((ns, name), "/"); None
    when the path does not start with two valid names. `raw_path` stays percent-encoded, so
    ``%2F`` in the rest reaches the backend as sent."""
    parts = raw_path.split("/", 3)
    if len(parts) < 3 or parts[0]:
        return None
    namespace, name = parts[1], parts[2]
    if not valid_key(namespace, name):
        return None
    rest = "/" + parts[3] if len(parts) == 4 else "/"
    return (namespace, name), rest


async def proxy(request: web.Request) -> web.Response:
    activator = request.app[ACTIVATOR]
    if request.rel_url.raw_path.startswith("/-/"):
        return error_response(
            404,
            f"{request.method} {request.rel_url.raw_path}: the activator's own endpoints are "
            "GET /-/healthz, /-/readyz and /-/metrics",
        )
    split = split_path(request.rel_url.raw_path)
    if split is None:
        return error_response(
            404,
            f"{request.rel_url.raw_path}: expected /<namespace>/<name>/<path>, where "
            "<namespace>/<name> is an InferenceService",
        )
    key, rest = split
    backends = activator.backends
    if backends.synced() and not backends.known(key):
        return error_response(404, f"InferenceService {key[0]}/{key[1]} not found")
    query = request.rel_url.raw_query_string
    path_qs = f"{rest}?{query}" if query else rest
    activator.metrics.received(key)
    status = 500
    try:
        response = await activator.handle(request, key, path_qs)
        status = response.status
        return response
    except (web.HTTPException, RequestError) as error:
        status = error.status
        raise
    except asyncio.CancelledError:
        status = 499  # the client went away (nginx's code for it)
        raise
    finally:
        activator.metrics.answered(key, status)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    synced = request.app[ACTIVATOR].backends.synced()
    return web.json_response(
        {"status": "ready" if synced else "syncing"}, status=200 if synced else 503
    )


async def metrics(request: web.Request) -> web.Response:
    activator = request.app[ACTIVATOR]
    activator.metrics.track(activator.backends.services())
    return web.Response(
        body=activator.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


def build_app(activator: Activator, middlewares: Sequence[Middleware] = ()) -> web.Application:
    """The application; `middlewares` run before the JSON error middleware (the server's
    connection guard)."""
    app = web.Application(
        middlewares=[
            *middlewares,
            json_errors(logger, "internal error in the activator; see its log"),
        ],
        client_max_size=activator.config.max_request_bytes,
    )
    app[ACTIVATOR] = activator
    # "-" cannot start a namespace, so these never shadow a service.
    app.router.add_get("/-/healthz", healthz)
    app.router.add_get("/-/readyz", readyz)
    app.router.add_get("/-/metrics", metrics)
    app.router.add_route("*", "/{path:.*}", proxy)
    return app
