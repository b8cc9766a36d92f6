"""The HTTP parts the activator and the model server share, on a real server on loopback: the
JSON error middleware (one line for a client's mistake, a traceback for a fault) and the
connection guard's count."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web

from sparsam.httpserver.connections import ConnectionGuard, ConnectionLimits, GuardedSite
from sparsam.httpserver.errors import RequestError, json_errors

LOGGER = "tests.httpserver"


def run(coroutine: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coroutine, 60))  # type: ignore[arg-type]


async def reads(request: web.Request) -> web.Response:
    return web.json_response({"bytes": len(await request.read())})


async def refuses(request: web.Request) -> web.Response:
    raise RequestError(409, "busy\nwith a second line", {"Retry-After": "3"})


async def fails(request: web.Request) -> web.Response:
    raise RuntimeError("a bug with a secret")


@asynccontextmanager
async def serving(guard: ConnectionGuard) -> AsyncIterator[str]:
    app = web.Application(
        middlewares=[guard.middleware, json_errors(logging.getLogger(LOGGER), "see the log")]
    )
    app.router.add_post("/reads", reads)
    app.router.add_post("/refuses", refuses)
    app.router.add_post("/fails", fails)
    runner = web.AppRunner(app)
    await runner.setup()
    site = GuardedSite(runner, "127.0.0.1", 0, guard)
    await site.start()
    try:
        yield f"http://127.0.0.1:{site.port}"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("method", "path", "headers", "status", "error", "logged"),
    [
        (
            "POST",
            "/reads",
            {"Content-Encoding": "gzip"},
            400,
            "the request body cannot be read: Can not decode content-encoding: gzip",
            "400 the request body cannot be read",
        ),
        ("POST", "/refuses", {}, 409, "busy\nwith a second line", "409 busy with a second line"),
        ("GET", "/reads", {}, 405, "GET /reads: Method Not Allowed", "405 GET /reads"),
        ("POST", "/nowhere", {}, 404, "POST /nowhere: Not Found", "404 POST /nowhere"),
    ],
    ids=["undecodable-body", "request-error", "wrong-method", "unknown-path"],
)
def test_a_clients_mistake_is_json_and_one_log_line(
    caplog: pytest.LogCaptureFixture,
    method: str,
    path: str,
    headers: dict[str, str],
    status: int,
    error: str,
    logged: str,
) -> None:
    async def scenario() -> None:
        async with (
            serving(ConnectionGuard(ConnectionLimits())) as url,
            aiohttp.ClientSession(auto_decompress=False) as session,
            session.request(method, url + path, data=b"not gzip", headers=headers) as response,
        ):
            assert response.status == status
            assert await response.json() == {"error": error}
            if status == 409:
                assert response.headers["Retry-After"] == "3"

    with caplog.at_level(logging.DEBUG):
        run(scenario())
    records = [r for r in caplog.records if r.name == LOGGER]
    assert len(records) == 1, [r.getMessage() for r in records]
    assert records[0].levelno == logging.INFO
    assert records[0].exc_info is None
    assert logged in records[0].getMessage()
    assert "\n" not in records[0].getMessage()
    # aiohttp logs nothing of its own at WARNING or above (no lingering traceback).
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_fault_is_500_without_details_and_its_traceback_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        async with (
            serving(ConnectionGuard(ConnectionLimits())) as url,
            aiohttp.ClientSession() as session,
            session.post(url + "/fails") as response,
        ):
            assert response.status == 500
            assert await response.json() == {"error": "see the log"}

    with caplog.at_level(logging.INFO):
        run(scenario())
    (record,) = [r for r in caplog.records if r.name == LOGGER]
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None


def test_the_guard_counts_open_connections_and_frees_closed_ones() -> None:
    async def scenario() -> None:
        guard = ConnectionGuard(ConnectionLimits(max_connections=2))
        async with serving(guard) as url:
            port = int(url.rsplit(":", 1)[1])
            opened = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
            deadline = time.monotonic() + 5
            while guard.open < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert guard.open == 2
            for _, writer in opened:
                writer.close()
            while guard.open and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert guard.open == 0

    run(scenario())
