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


def runner_and_site(
    activator: Activator, listen: ListenConfig
) -> tuple[web.AppRunner, GuardedSite]:
    """The activator's application behind its connection guard, ready to set up and start."""
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
    )
    return runner, GuardedSite(runner, listen.host, listen.port, guard)


async def serve(activator: Activator, listen: ListenConfig) -> int:
    """Serve until SIGTERM or SIGINT; OK after a clean drain, FAILED if it cannot listen."""
    runner, site = runner_and_site(activator, listen)
    await activator.start()
    await runner.setup()
    try:
        await site.start()
    except OSError as error:
        logger.error("cannot listen on %s:%d: %s", listen.host, listen.port, error)
        await runner.cleanup()
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
