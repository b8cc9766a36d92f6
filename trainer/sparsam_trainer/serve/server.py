"""Running the server: listen first, load in the background, drain on SIGTERM.

The order matters on Kubernetes. Listening before the model is loaded lets the liveness probe
(``/healthz``) pass during a long load, while the readiness probe (``/readyz``) keeps traffic
away until the model has answered one warm-up inference. On SIGTERM the server reports not ready,
keeps serving for ``--shutdown-delay`` seconds (0 by default; a few seconds cover the time
endpoints take to stop routing to a terminating pod), closes its listening socket, lets in-flight
requests finish (up to the grace period) and exits 0, so a scale-down or a spot reclaim never
cuts off a request that had already arrived.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from aiohttp import web

from sparsam.httpserver.connections import ConnectionGuard, ConnectionLimits, GuardedSite
from sparsam_trainer import exitcodes
from sparsam_trainer.export import MAX_TEXT_CHARS, ExportError
from sparsam_trainer.serve.app import ModelServer, build_app
from sparsam_trainer.serve.metrics import ServerMetrics

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerConfig:
    model_dir: Path
    host: str
    port: int
    threads: int
    max_batch: int
    max_request_bytes: int
    grace_seconds: float
    shutdown_delay: float
    access_log: bool
    max_text_chars: int = MAX_TEXT_CHARS


async def serve(config: ServerConfig) -> int:
    """Serve until SIGTERM or SIGINT (exit code OK) or until the model fails to load (FAILED)."""
    torch.set_num_threads(config.threads)
    # One inference thread: torch already spreads one batch over `threads` cores, and two
    # batches at once would only contend for them.
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
    server = ModelServer(
        config.model_dir,
        max_batch=config.max_batch,
        max_request_bytes=config.max_request_bytes,
        executor=executor,
        metrics=ServerMetrics(),
        max_text_chars=config.max_text_chars,
    )
    # Slow or idle clients are cut as at the activator (header deadline, connection cap).
    guard = ConnectionGuard(ConnectionLimits())
    runner = web.AppRunner(
        build_app(server, [guard.middleware]),
        access_log=logging.getLogger("sparsam_trainer.serve.access") if config.access_log else None,
        shutdown_timeout=config.grace_seconds,
        # Longer than the idle timeout of proxies in front (the activator's client keeps
        # connections for less), so none sends on a connection closed under it.
        keepalive_timeout=75.0,
    )
    await runner.setup()
    try:
        await GuardedSite(runner, config.host, config.port, guard).start()
    except OSError as error:
        logger.error("cannot listen on %s:%d: %s", config.host, config.port, error)
        await runner.cleanup()
        executor.shutdown(wait=False)
        return exitcodes.FAILED
    logger.info("listening on http://%s:%d; loading %s", config.host, config.port, config.model_dir)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loading = asyncio.create_task(_load(server))
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({loading, stopping}, return_when=asyncio.FIRST_COMPLETED)
    code = exitcodes.OK
    if loading.done() and not loading.result():
        code = exitcodes.FAILED
    else:
        await stopping
    server.drain()
    if code == exitcodes.OK and config.shutdown_delay > 0:
        # Endpoints and load balancers stop routing here only after they see the pod terminating
        # or unready; until then, keep answering rather than refuse connections.
        logger.info("stopping: unready, still serving for %gs", config.shutdown_delay)
        await asyncio.sleep(config.shutdown_delay)
    logger.info("stopping: draining in-flight requests (at most %gs)", config.grace_seconds)
    # Closes the listening socket and idle connections, then waits for running handlers.
    await runner.cleanup()
    loading.cancel()
    stopping.cancel()
    executor.shutdown(wait=False, cancel_futures=True)
    logger.info("stopped")
    return code


async def _load(server: ModelServer) -> bool:
    try:
        task, seconds = await server.load()
    except ExportError as error:
        logger.error("cannot load the model: %s", error)
        return False
    except Exception:
        logger.exception("cannot load the model from %s", server.model_dir)
        return False
    logger.info("ready: %s loaded and warmed up in %.2fs", task, seconds)
    return True
