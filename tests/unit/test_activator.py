"""The activator's HTTP behaviour, in process: a programmable BackendTable and waker behind the
protocols, real aiohttp backends on loopback, and the real application in front of them."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from sparsam.activator.app import Activator, ActivatorConfig, build_app
from sparsam.activator.backends import BackendTable, ServiceKey
from sparsam.activator.wake import ServiceNotFoundError, ThrottledWaker

KEY: ServiceKey = ("team", "digits")
OTHER: ServiceKey = ("team", "news")


def run(coroutine: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coroutine, 60))  # type: ignore[arg-type]


class FakeWaker:
    """Records wake requests; raises ServiceNotFoundError for the keys in `missing`."""

    def __init__(self, missing: frozenset[ServiceKey] = frozenset()) -> None:
        self.calls: list[tuple[ServiceKey, float]] = []
        self.missing = missing

    async def wake(self, key: ServiceKey) -> None:
        self.calls.append((key, time.monotonic()))
        if key in self.missing:
            raise ServiceNotFoundError(f"InferenceService {key[0]}/{key[1]} not found")


@dataclass
class Backend:
    """A real HTTP server on loopback that echoes what it received, as JSON."""

    name: str
    port: int = 0
    seen: list[dict[str, Any]] = field(default_factory=list)
    answers: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    runner: web.AppRunner | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> Backend:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._echo)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def _echo(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append(
            {
                "method": request.method,
                "path": request.rel_url.raw_path,
                "query": request.rel_url.raw_query_string,
                "body": body,
                "headers": dict(request.headers),
            }
        )
        status, headers = self.answers.pop(0) if self.answers else (201, {})
        payload = {"backend": self.name, "method": request.method, "body": body.hex()}
        return web.json_response(
            payload, status=status, headers={"X-Backend": self.name, **headers}
        )


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def table_of(ready: dict[ServiceKey, list[str]], synced: bool = True) -> BackendTable:
    table = BackendTable()
    table.set_services([KEY, OTHER, *ready])
    table.replace_ready(ready)
    if synced:
        table.mark_synced()
    return table


@asynccontextmanager
async def activator(
    table: BackendTable, waker: FakeWaker | None = None, **config: Any
) -> AsyncIterator[tuple[TestClient[web.Request, web.Application], Activator]]:
    settings = {"hold_timeout": 10.0, "wake_interval": 1.0, **config}
    front = Activator(
        table,
        ThrottledWaker(waker or FakeWaker(), settings["wake_interval"]),
        ActivatorConfig(**settings),
    )
    await front.start()
    client = TestClient(TestServer(build_app(front)))
    await client.start_server()
    try:
        yield client, front
    finally:
        await client.close()
        await front.close()


@asynccontextmanager
async def backends(*names: str) -> AsyncIterator[list[Backend]]:
    started = [await Backend(name).start() for name in names]
    try:
        yield started
    finally:
        for backend in started:
            await backend.stop()


async def metric(client: TestClient[web.Request, web.Application], sample: str) -> float | None:
    """The value of `sample` (name{labels} as exposed, labels in sorted order) or None."""
    text = await (await client.get("/-/metrics")).text()
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == sample:
            return float(value)
    return None


def labels(key: ServiceKey, **extra: str) -> str:
    pairs = {"inference_service": key[1], "namespace": key[0], **extra}
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(pairs.items())) + "}"


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not true after {timeout}s")
        await asyncio.sleep(0.01)


async def held(client: TestClient[web.Request, web.Application], count: int) -> None:
    async def reached() -> bool:
        return await metric(client, "sparsam_activator_held_requests" + labels(KEY)) == count

    await eventually(reached, f"{count} requests held")


# Forwarding ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "backend_path", "query"),
    [
        ("GET", "/team/digits/v1/items?a=1&b=two%20words", b"", "/v1/items", "a=1&b=two%20words"),
        ("POST", "/team/digits/v1/predict", b'{"instances": [[1, 2]]}', "/v1/predict", ""),
        ("PUT", "/team/digits/blob", bytes(range(256)), "/blob", ""),
        ("DELETE", "/team/digits/items/7", b"", "/items/7", ""),
        ("GET", "/team/digits", b"", "/", ""),
        ("GET", "/team/digits/a%2Fb/c", b"", "/a%2Fb/c", ""),
    ],
    ids=["get-query", "post-json", "put-binary", "delete", "service-root", "encoded-slash"],
)
def test_forwards_method_path_query_body_and_headers(
    method: str, path: str, body: bytes, backend_path: str, query: str
) -> None:
    async def scenario() -> None:
        async with backends("a") as (a,), activator(table_of({KEY: [a.address]})) as (client, _):
            response = await client.request(
                method, path, data=body or None, headers={"X-Custom": "yes", "Keep-Alive": "5"}
            )
            assert response.status == 201
            assert response.headers["X-Backend"] == "a"
            assert (await response.json())["body"] == body.hex()
            (seen,) = a.seen
            assert (seen["method"], seen["path"], seen["query"], seen["body"]) == (
                method,
                backend_path,
                query,
                body,
            )
            assert seen["headers"]["X-Custom"] == "yes"
            assert "Keep-Alive" not in seen["headers"]
            # The backend sees its own address as Host, and who asked in X-Forwarded-*.
            assert seen["headers"]["Host"] == a.address
            assert seen["headers"]["X-Forwarded-Host"] == f"{client.host}:{client.port}"
            assert seen["headers"]["X-Forwarded-For"] == "127.0.0.1"

    run(scenario())


def test_round_robin_across_ready_backends() -> None:
    async def scenario() -> None:
        async with backends("a", "b", "c") as started:
            table = table_of({KEY: [b.address for b in started]})
            async with activator(table) as (client, _):
                answered = [
                    (await (await client.get("/team/digits/x")).json())["backend"] for _ in range(9)
                ]
        assert sorted(answered) == ["a"] * 3 + ["b"] * 3 + ["c"] * 3
        # In turn, not in bursts: every window of three has each backend once.
        assert all(len(set(answered[i : i + 3])) == 3 for i in range(7))

    run(scenario())


# Holding ------------------------------------------------------------------------------------


def test_held_request_is_released_when_a_backend_turns_ready() -> None:
    async def scenario() -> None:
        table = table_of({})
        waker = FakeWaker()
        # Long hold timeout and wake interval: no timer of the activator fires in this test, so
        # only the change notification can release the request.
        async with (
            backends("a") as (a,),
            activator(table, waker, hold_timeout=30, wake_interval=30) as (client, _),
        ):
            request = asyncio.create_task(client.post("/team/digits/v1/predict", data=b"{}"))
            await held(client, 1)
            assert await metric(client, "sparsam_activator_requests_in_flight" + labels(KEY)) == 1
            await asyncio.sleep(0.3)
            released = time.monotonic()
            table.set_ready(KEY, [a.address])
            response = await request
            assert response.status == 201
            assert time.monotonic() - released < 1.0
            assert [call[0] for call in waker.calls] == [KEY]
            assert await metric(client, "sparsam_activator_held_requests" + labels(KEY)) == 0
            count = await metric(client, "sparsam_activator_hold_seconds_count" + labels(KEY))
            seconds = await metric(client, "sparsam_activator_hold_seconds_sum" + labels(KEY))
            assert count == 1
            assert seconds is not None and seconds >= 0.3

    run(scenario())


def test_requests_wait_for_the_first_sync() -> None:
    async def scenario() -> None:
        table = table_of({}, synced=False)
        async with backends("a") as (a,), activator(table, hold_timeout=30) as (client, _):
            known = asyncio.create_task(client.get("/team/digits/x"))
            unknown = asyncio.create_task(client.get("/team/unknown/x"))
            assert (await client.get("/-/readyz")).status == 503
            await asyncio.sleep(0.2)
            assert not known.done() and not unknown.done()
            table.set_ready(KEY, [a.address])
            table.mark_synced()
            assert (await known).status == 201
            assert (await unknown).status == 404
            assert (await client.get("/-/readyz")).status == 200

    run(scenario())


@pytest.mark.parametrize(
    ("config", "already_held", "retry_after", "message"),
    [
        ({"hold_timeout": 0.3}, 0, "5", "became ready within 0.3s"),
        ({"hold_timeout": 30, "max_held": 2}, 2, "1", "2 requests are already waiting"),
    ],
    ids=["hold-timeout", "queue-full"],
)
def test_503_with_retry_after(
    config: dict[str, Any], already_held: int, retry_after: str, message: str
) -> None:
    async def scenario() -> None:
        table = table_of({})
        async with backends("a") as (a,), activator(table, **config) as (client, _):
            waiting = [
                asyncio.create_task(client.get("/team/digits/x")) for _ in range(already_held)
            ]
            if already_held:
                await held(client, already_held)
            response = await client.get("/team/digits/x")
            assert response.status == 503
            assert response.headers["Retry-After"] == retry_after
            assert message in (await response.json())["error"]
            # The ones already waiting are still served once a backend is ready.
            table.set_ready(KEY, [a.address])
            assert [(await w).status for w in waiting] == [201] * already_held
            assert await metric(client, "sparsam_activator_held_requests" + labels(KEY)) == 0
            assert await metric(client, "sparsam_activator_requests_in_flight" + labels(KEY)) == 0
            assert (
                await metric(client, "sparsam_activator_responses_total" + labels(KEY, code="503"))
                == 1
            )

    run(scenario())


def test_shutdown_answers_held_requests_early() -> None:
    async def scenario() -> None:
        async with activator(table_of({}), hold_timeout=30, wake_interval=30) as (client, front):
            request = asyncio.create_task(client.get("/team/digits/x"))
            await held(client, 1)
            front.stop_holding(0.2)
            started = time.monotonic()
            assert (await request).status == 503
            assert time.monotonic() - started < 2

    run(scenario())


@pytest.mark.parametrize(
    ("path", "missing", "message"),
    [
        ("/team/unknown/v1/predict", frozenset(), "InferenceService team/unknown not found"),
        ("/team/digits/x", frozenset({KEY}), "InferenceService team/digits not found"),
        ("/", frozenset(), "expected /<namespace>/<name>/<path>"),
        ("/team", frozenset(), "expected /<namespace>/<name>/<path>"),
        ("/Team/digits/x", frozenset(), "expected /<namespace>/<name>/<path>"),
        ("/-/nothing", frozenset(), "the activator's own endpoints are"),
    ],
    ids=["unknown-service", "waker-says-gone", "root", "namespace-only", "bad-name", "own-prefix"],
)
def test_404_json(path: str, missing: frozenset[ServiceKey], message: str) -> None:
    async def scenario() -> None:
        async with activator(table_of({}), FakeWaker(missing)) as (client, _):
            response = await client.get(path)
            assert response.status == 404
            assert message in (await response.json())["error"]
            text = await (await client.get("/-/metrics")).text()
            assert 'inference_service="unknown"' not in text

    run(scenario())


# Retries and failures -----------------------------------------------------------------------


def test_connection_refused_is_retried_until_the_backend_listens() -> None:
    async def scenario() -> None:
        port = unused_port()
        table = table_of({KEY: [f"127.0.0.1:{port}"]})
        async with activator(table) as (client, _):
            request = asyncio.create_task(client.post("/team/digits/v1/predict", data=b"{}"))
            await asyncio.sleep(0.4)
            assert not request.done()
            late = await Backend("late", port).start()
            try:
                response = await request
                assert response.status == 201
                assert len(late.seen) == 1
                assert (
                    await metric(client, "sparsam_activator_hold_seconds_count" + labels(KEY)) == 1
                )
            finally:
                await late.stop()

    run(scenario())


def test_a_dead_backend_is_skipped_for_a_live_one() -> None:
    async def scenario() -> None:
        async with backends("live") as (live,):
            table = table_of({KEY: [f"127.0.0.1:{unused_port()}", live.address]})
            async with activator(table) as (client, _):
                statuses = [(await client.get("/team/digits/x")).status for _ in range(6)]
        assert statuses == [201] * 6
        assert len(live.seen) == 6

    run(scenario())


@pytest.mark.parametrize(
    "reply",
    [
        b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"predictions": ',
        b"",
    ],
    ids=["dies-mid-body", "closes-before-answering"],
)
def test_a_request_that_was_sent_and_failed_is_502_and_not_retried(reply: bytes) -> None:
    async def scenario() -> None:
        connections = 0

        async def broken(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            await reader.readuntil(b"\r\n\r\n")
            writer.write(reply)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(broken, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            async with activator(table_of({KEY: [f"127.0.0.1:{port}"]})) as (client, _):
                response = await client.post("/team/digits/v1/predict", data=b"{}")
                assert response.status == 502
                assert "failed while answering" in (await response.json())["error"]
                assert connections == 1
        finally:
            server.close()
            await server.wait_closed()

    run(scenario())


@pytest.mark.parametrize(
    ("answers", "status", "calls"),
    [
        ([(503, {"Retry-After": "1"}), (503, {"Retry-After": "1"})], 201, 3),
        ([(503, {})], 503, 1),
        ([(500, {})], 500, 1),
    ],
    ids=["503-retry-after-is-retried", "503-without-retry-after-passes", "500-passes"],
)
def test_backend_errors(answers: list[tuple[int, dict[str, str]]], status: int, calls: int) -> None:
    async def scenario() -> None:
        async with backends("a") as (a,), activator(table_of({KEY: [a.address]})) as (client, _):
            a.answers.extend(answers)
            response = await client.post("/team/digits/v1/predict", data=b"{}")
            assert response.status == status
            assert len(a.seen) == calls

    run(scenario())


def test_a_slow_backend_is_504_and_not_retried() -> None:
    async def scenario() -> None:
        calls = 0

        async def slow(request: web.Request) -> web.Response:
            nonlocal calls
            calls += 1
            await asyncio.sleep(5)
            return web.Response()

        app = web.Application()
        app.router.add_get("/x", slow)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        try:
            table = table_of({KEY: [f"127.0.0.1:{server.port}"]})
            async with activator(table, upstream_timeout=0.3) as (client, _):
                response = await client.get("/team/digits/x")
                assert response.status == 504
                assert "did not answer within 0.3s" in (await response.json())["error"]
                assert calls == 1
        finally:
            await server.close()

    run(scenario())


def test_a_backend_that_stays_unavailable_passes_its_503_at_the_hold_timeout() -> None:
    async def scenario() -> None:
        async with (
            backends("a") as (a,),
            activator(table_of({KEY: [a.address]}), hold_timeout=0.3) as (client, _),
        ):
            a.answers.extend([(503, {"Retry-After": "1"})] * 100)
            response = await client.get("/team/digits/x")
            assert response.status == 503
            assert (await response.json())["backend"] == "a"
            assert len(a.seen) > 1

    run(scenario())


def test_a_crowd_held_on_a_loading_backend_probes_it_one_at_a_time() -> None:
    """50 requests meet a backend still loading (503 with Retry-After for 0.5 s): one probes it
    every unavailable_delay while the others wait for the probe's news, so the loading server
    gets tens of probes, not 50 per round; then every request is answered."""

    async def scenario() -> None:
        async with (
            backends("a") as (a,),
            activator(table_of({KEY: [a.address]}), unavailable_delay=0.02) as (client, _),
        ):
            a.answers.extend([(503, {"Retry-After": "1"})] * 10_000)

            async def loaded() -> None:
                await asyncio.sleep(0.5)
                a.answers.clear()

            started = time.monotonic()
            loading = asyncio.ensure_future(loaded())
            responses = await asyncio.gather(
                *(client.post("/team/digits/v1/predict", data=b"{}") for _ in range(50))
            )
            await loading
            took = time.monotonic() - started
        assert [r.status for r in responses] == [201] * 50
        probes = len(a.seen) - 50  # every request is answered once by the loaded backend
        # One probe each 20 ms for 0.5 s, plus the first round's 503s: far fewer than the
        # 50 x 25 a crowd polling on its own would send.
        assert probes < 50 + 0.5 / 0.02 * 2, probes
        # Released at once after loading, not a polling interval later.
        assert took < 0.5 + 0.3, took

    run(scenario())


# Waking and metrics -------------------------------------------------------------------------


def test_wake_is_asked_once_per_interval_not_per_request() -> None:
    async def scenario() -> None:
        waker = FakeWaker()
        async with activator(table_of({}), waker, hold_timeout=1.5, wake_interval=1.0) as (
            client,
            _,
        ):
            responses = await asyncio.gather(*(client.get("/team/digits/x") for _ in range(40)))
        assert {r.status for r in responses} == {503}
        # 40 requests held for 1.5s: asked at about 0s and 1s, never once per request.
        assert 2 <= len(waker.calls) <= 3
        assert {call[0] for call in waker.calls} == {KEY}
        gaps = [b[1] - a[1] for a, b in zip(waker.calls, waker.calls[1:], strict=False)]
        assert all(gap >= 0.9 for gap in gaps)

    run(scenario())


def test_metrics_are_precreated_counted_and_dropped_with_their_service() -> None:
    async def scenario() -> None:
        async with backends("a") as (a,):
            table = table_of({KEY: [a.address]})
            async with activator(table) as (client, _):
                for key in (KEY, OTHER):
                    assert (
                        await metric(client, "sparsam_activator_requests_total" + labels(key)) == 0
                    )
                    assert (
                        await metric(client, "sparsam_activator_held_requests" + labels(key)) == 0
                    )
                    assert (
                        await metric(client, "sparsam_activator_requests_in_flight" + labels(key))
                        == 0
                    )
                    assert (
                        await metric(
                            client, "sparsam_activator_last_request_timestamp_seconds" + labels(key)
                        )
                        is None
                    )
                before = time.time()
                for _ in range(3):
                    await client.get("/team/digits/x")
                a.answers.append((400, {}))
                await client.get("/team/digits/x")
                assert await metric(client, "sparsam_activator_requests_total" + labels(KEY)) == 4
                assert await metric(client, "sparsam_activator_requests_total" + labels(OTHER)) == 0
                for code, count in (("201", 3), ("400", 1)):
                    assert (
                        await metric(
                            client, "sparsam_activator_responses_total" + labels(KEY, code=code)
                        )
                        == count
                    )
                last = await metric(
                    client, "sparsam_activator_last_request_timestamp_seconds" + labels(KEY)
                )
                assert last is not None and last >= before - 1
                # Nothing was held: the histogram counts only requests that waited.
                assert (
                    await metric(client, "sparsam_activator_hold_seconds_count" + labels(KEY))
                    is None
                )
                table.remove_service(KEY)
                text = await (await client.get("/-/metrics")).text()
                assert 'inference_service="digits"' not in text
                assert 'inference_service="news"' in text

    run(scenario())


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/-/healthz", 200), ("GET", "/-/readyz", 200), ("POST", "/-/healthz", 404)],
    ids=["healthz", "readyz", "wrong-method"],
)
def test_own_endpoints_answer_json(method: str, path: str, status: int) -> None:
    async def scenario() -> None:
        async with activator(table_of({})) as (client, _):
            response = await client.request(method, path)
            assert response.status == status
            assert isinstance(json.loads(await response.text()), dict)

    run(scenario())


def test_a_body_over_the_limit_is_413() -> None:
    async def scenario() -> None:
        async with (
            backends("a") as (a,),
            activator(table_of({KEY: [a.address]}), max_request_bytes=1024) as (client, _),
        ):
            response = await client.post("/team/digits/v1/predict", data=b"x" * 4096)
            assert response.status == 413
            assert "error" in await response.json()
            assert a.seen == []
            assert (
                await metric(client, "sparsam_activator_responses_total" + labels(KEY, code="413"))
                == 1
            )

    run(scenario())
