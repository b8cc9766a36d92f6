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

logger = logging.getLogger(__name__)

OK = 0
FAILED = 1


@dataclass(frozen=True)
class ListenConfig:
    host: str = "0.0.0.0"  # noqa: S104 - a pod serves its port
    port: int = 8081
    grace_seconds: float = 25.0
    access_log: bool = False


async def serve(activator: Activator, listen: ListenConfig) -> int:
    """Serve until SIGTERM or SIGINT; OK after a clean drain, FAILED if it cannot listen."""
    runner = web.AppRunner(
        build_app(activator),
        access_log=logging.getLogger("sparsam.activator.access") if listen.access_log else None,
        shutdown_timeout=listen.grace_seconds,
    )
    await activator.start()
    await runner.setup()
    try:
        await web.TCPSite(runner, listen.host, listen.port).start()
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
