"""Running the activator: listen, serve until SIGTERM, then drain.

On SIGTERM or SIGINT the activator stops accepting connections, gives held requests their 503
before the grace period runs out (a pod being replaced must answer what it took in, not drop
it), lets forwarded requests finish, and exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass

from aiohttp import web

from sparsam.activator.app import Activator, build_app
from sparsam.httpserver.connections import ConnectionGuard, ConnectionLimits, GuardedSite

logger = logging.getLogger(__name__)

OK = 0
FAILED = 1


@dataclass(frozen=True)
class ListenConfig:
    host: str = "0.0.0.0"  # noqa: S104 - a pod serves its port
    port: int = 8081
    grace_seconds: float = 25.0
    access_log: bool = False
    #: Open connections at most; more are answered 503 and closed at once.
    max_connections: int = 1000
    #: A request's headers must be complete this long after its first byte.
    header_timeout: float = 10.0
    #: An idle keep-alive connection is closed after this long: longer than the usual idle
    #: timeout of proxies in front (60s), so they never send on a connection closed under them.
    idle_timeout: float = 75.0


async def listen_on(activator: Activator, listen: ListenConfig) -> tuple[web.AppRunner, int]:
    """Start the activator's application behind its connection guard: the runner (to clean up)
    and the port it listens on. OSError (runner cleaned up) when it cannot listen."""
    guard = ConnectionGuard(
        ConnectionLimits(
            max_connections=listen.max_connections, header_timeout=listen.header_timeout
        ),
        on_cut=activator.metrics.connection_cut,
    )
    runner = web.AppRunner(
        build_app(activator, [guard.middleware]),
        access_log=logging.getLogger("sparsam.activator.access") if listen.access_log else None,
        shutdown_timeout=listen.grace_seconds,
        keepalive_timeout=listen.idle_timeout,
        # The body goes to the replica as the client sent it: decoding a gzip body here would
        # forward plain bytes under "Content-Encoding: gzip", and expand a bomb in this process.
        auto_decompress=False,
    )
    await runner.setup()
    site = GuardedSite(runner, listen.host, listen.port, guard)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    return runner, site.port


async def serve(activator: Activator, listen: ListenConfig) -> int:
    """Serve until SIGTERM or SIGINT; OK after a clean drain, FAILED if it cannot listen."""
    await activator.start()
    try:
        runner, _ = await listen_on(activator, listen)
    except OSError as error:
        logger.error("cannot listen on %s:%d: %s", listen.host, listen.port, error)
        await activator.close()
        return FAILED
    logger.info("listening on http://%s:%d", listen.host, listen.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    # Held requests are answered a second before the grace period ends, so the cleanup below
    # never has to cancel one.
    activator.stop_holding(max(listen.grace_seconds - 1.0, 0.0))
    logger.info("stopping: draining in-flight requests (at most %gs)", listen.grace_seconds)
    await runner.cleanup()
    await activator.close()
    logger.info("stopped")
    return OK
