"""The activator against careless and hostile clients, over real sockets on loopback: the
activator as `sparsam activator` listens (connection guard included), real aiohttp backends
behind it, and raw clients that send exactly the bytes a test chooses."""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from tests.unit.test_activator import KEY, OTHER, Backend, FakeWaker, backends, table_of

from sparsam.activator.app import Activator, ActivatorConfig
from sparsam.activator.backends import BackendTable
from sparsam.activator.server import ListenConfig, listen_on
from sparsam.activator.wake import ThrottledWaker

MiB = 1024 * 1024


def run(coroutine: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coroutine, 60))  # type: ignore[arg-type]


@dataclass
class Front:
    activator: Activator
    port: int

    def counter(self, name: str, *labels: str) -> float:
        metric = getattr(self.activator.metrics, name)
        value: float = metric.labels(*labels)._value.get()
        return value


@asynccontextmanager
async def front(
    table: BackendTable, listen: dict[str, Any] | None = None, **config: Any
) -> AsyncIterator[Front]:
    settings = {"hold_timeout": 10.0, **config}
    activator = Activator(table, ThrottledWaker(FakeWaker(), 1.0), ActivatorConfig(**settings))
    await activator.start()
    runner, port = await listen_on(
        activator, ListenConfig(host="127.0.0.1", port=0, grace_seconds=1.0, **(listen or {}))
    )
    try:
        yield Front(activator, port)
    finally:
        await runner.cleanup()
        await activator.close()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float

    def json(self) -> Any:
        return json.loads(self.body)


class Raw:
    """One client connection that sends exactly what it is given."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.opened = time.monotonic()

    @classmethod
    async def open(cls, port: int) -> Raw:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self, timeout: float = 10) -> Answer:
        """The next response (its headers and Content-Length body)."""
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        body = await asyncio.wait_for(self.reader.readexactly(length), timeout)
        return Answer(status, headers, body, time.monotonic() - self.opened)

    async def closed(self, timeout: float = 10) -> bool:
        """True once the activator has closed the connection."""
        try:
            rest = await asyncio.wait_for(self.reader.read(), timeout)
        except (ConnectionError, TimeoutError):
            return False
        return rest == b""

    def close(self) -> None:
        self.writer.close()


def request(
    path: str, body: bytes = b"", headers: dict[str, str] | None = None, chunked: bool = False
) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: front:80"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
        payload = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n" if body else b"0\r\n\r\n"
    else:
        lines.append(f"Content-Length: {len(body)}")
        payload = body
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


async def ask(port: int, data: bytes, timeout: float = 10) -> Answer:
    raw = await Raw.open(port)
    try:
        await raw.send(data)
        return await raw.answer(timeout)
    finally:
        raw.close()


async def trickle(raw: Raw, pieces: list[bytes]) -> Answer:
    """Send `pieces` 0.1 s apart until an answer comes (read before the next piece, whose
    write would fail on the closed connection)."""
    for piece in pieces:
        await raw.send(piece)
        try:
            return await raw.answer(timeout=0.1)
        except TimeoutError:
            continue
    return await raw.answer(timeout=5)


# Buffered bytes -----------------------------------------------------------------------------


def test_held_bytes_are_bounded_per_service_and_in_all() -> None:
    """A service at zero fills its budget with held bodies; the next body is refused 503 with
    Retry-After before it is read, the total bound holds across services, and every byte is
    given back when the held requests are answered."""

    async def scenario() -> None:
        async with front(
            table_of({}),
            hold_timeout=5.0,
            max_request_bytes=2 * MiB,
            max_buffered_bytes_per_service=3 * MiB,
            max_buffered_bytes=4 * MiB,
        ) as f:
            budget = f.activator.budget
            held = [await Raw.open(f.port) for _ in range(3)]
            for raw in held:
                await raw.send(request("/team/digits/v1/predict", b"x" * MiB))
            deadline = time.monotonic() + 5
            while budget.used_by(KEY) < 3 * MiB and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert budget.used_by(KEY) == 3 * MiB

            # Content-Length claims the whole body at once: refused before it is read.
            refused = await ask(f.port, request("/team/digits/v1/predict", b"y" * 10))
            assert refused.status == 503
            assert refused.headers["retry-after"] == "1"
            assert (
                "team/digits already has 3145728 request bytes buffered" in refused.json()["error"]
            )
            assert refused.seconds < 2.5  # at once, not after the hold timeout
            assert f.counter("refusals", *KEY, "buffer_full_service") == 1

            # Without Content-Length, the bytes are claimed as they come.
            other = await ask(f.port, request("/team/news/x", b"z" * (MiB + 1), chunked=True))
            assert other.status == 503
            assert "the activator already has" in other.json()["error"]
            assert f.counter("refusals", *OTHER, "buffer_full_total") == 1
            assert budget.used == 3 * MiB  # what the refused request had claimed is back

            for raw in held:  # the hold timeout answers them; their bytes go back
                assert (await raw.answer()).status == 503
                raw.close()
            assert budget.used == 0
            assert budget.used_by(KEY) == 0

    run(scenario())


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_over_the_request_limit_is_413_at_once(chunked: bool) -> None:
    async def scenario() -> None:
        async with (
            backends("a") as (a,),
            front(table_of({KEY: [a.address]}), max_request_bytes=64 * 1024) as f,
        ):
            answer = await ask(
                f.port, request("/team/digits/x", b"x" * (64 * 1024 + 1), chunked=chunked)
            )
            assert answer.status == 413
            assert answer.json() == {"error": "request body is larger than 65536 bytes"}
            assert answer.seconds < 2
            assert a.seen == []
            assert f.counter("refusals", *KEY, "body_too_large") == 1
            assert f.activator.budget.used == 0

    run(scenario())


# Slow clients -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sent",
    [b"", b"POST /team/digits/x HTTP/1.1\r\nHost: fr"],
    ids=["nothing", "half-the-headers"],
)
def test_slow_headers_are_cut_at_the_header_timeout(sent: bytes) -> None:
    async def scenario() -> None:
        async with front(table_of({}), listen={"header_timeout": 0.5}) as f:
            raw = await Raw.open(f.port)
            await raw.send(sent)
            answer = await raw.answer(timeout=5)
            assert answer.status == 408
            assert 0.4 < answer.seconds < 3
            assert await raw.closed()
            assert f.counter("connections_cut", "header_timeout") == 1

    run(scenario())


def test_trickled_headers_do_not_reset_the_header_timeout() -> None:
    async def scenario() -> None:
        async with front(table_of({}), listen={"header_timeout": 0.6}) as f:
            raw = await Raw.open(f.port)
            data = request("/team/digits/x", b"{}")
            started = time.monotonic()
            # A byte every 0.1 s: more than the timeout in all, never idle for long.
            answer = await trickle(raw, [data[i : i + 1] for i in range(40)])
            assert answer.status == 408
            assert time.monotonic() - started < 3

    run(scenario())


def test_a_trickled_body_is_cut_with_408() -> None:
    async def scenario() -> None:
        async with (
            backends("a") as (a,),
            front(
                table_of({KEY: [a.address]}), body_timeout=5.0, body_grace=0.5, body_min_rate=1000
            ) as f,
        ):
            raw = await Raw.open(f.port)
            await raw.send(request("/team/digits/x", b"x" * 10_000)[:-10_000] + b"xx")
            started = time.monotonic()
            # A byte every 0.1 s, far below 1000 bytes/s.
            answer = await trickle(raw, [b"x"] * 50)
            assert answer.status == 408
            assert "the request body came too slowly" in answer.json()["error"]
            assert time.monotonic() - started < 3
            assert a.seen == []
            assert f.counter("refusals", *KEY, "body_too_slow") == 1
            assert f.activator.budget.used == 0

    run(scenario())


def test_connections_over_the_cap_are_refused_at_once() -> None:
    async def scenario() -> None:
        async with (
            backends("a") as (a,),
            front(table_of({KEY: [a.address]}), listen={"max_connections": 3}) as f,
        ):
            idle = [await Raw.open(f.port) for _ in range(3)]
            await asyncio.sleep(0.05)
            extra = await Raw.open(f.port)
            answer = await extra.answer(timeout=5)
            assert answer.status == 503
            assert answer.headers["retry-after"] == "1"
            assert answer.seconds < 2.5
            assert await extra.closed()
            assert f.counter("connections_cut", "too_many_connections") == 1
            for raw in idle:
                raw.close()
            # Closed connections free their places.
            deadline = time.monotonic() + 5
            while True:
                served = await ask(f.port, request("/team/digits/x", b"{}"))
                if served.status == 201 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            assert served.status == 201

    run(scenario())


# Headers ------------------------------------------------------------------------------------


async def _forwarded(backend: Backend, port: int, headers: dict[str, str]) -> dict[str, str]:
    answer = await ask(port, request("/team/digits/x", b"abc", headers))
    assert answer.status == 201
    seen: dict[str, str] = {k.lower(): v for k, v in backend.seen[-1]["headers"].items()}
    return seen


CLAIMS = {
    "X-Forwarded-For": "1.2.3.4",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "evil.example",
    "Forwarded": "for=1.2.3.4",
    "X-Real-IP": "1.2.3.4",
}


def test_the_backend_gets_what_the_client_sent_and_forwarding_headers_set_by_the_activator() -> (
    None
):
    async def scenario() -> None:
        async with backends("a") as (a,), front(table_of({KEY: [a.address]})) as f:
            seen = await _forwarded(a, f.port, CLAIMS)
            assert seen["x-forwarded-for"] == "127.0.0.1"
            assert seen["x-forwarded-proto"] == "http"
            assert seen["x-forwarded-host"] == "front:80"
            assert "forwarded" not in seen
            assert "x-real-ip" not in seen
            # Nothing the client did not send: no Accept(-Encoding), User-Agent or Content-Type.
            assert set(seen) == {
                "host",
                "content-length",
                "x-forwarded-for",
                "x-forwarded-proto",
                "x-forwarded-host",
            }
            assert a.seen[-1]["body"] == b"abc"

            sent = await _forwarded(
                a, f.port, {"Accept-Encoding": "identity", "Content-Type": "text/plain"}
            )
            assert sent["accept-encoding"] == "identity"
            assert sent["content-type"] == "text/plain"

    run(scenario())


def test_a_trusted_proxy_keeps_its_forwarding_headers_and_the_chain_grows() -> None:
    async def scenario() -> None:
        async with (
            backends("a") as (a,),
            front(
                table_of({KEY: [a.address]}),
                trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),),
            ) as f,
        ):
            seen = await _forwarded(a, f.port, CLAIMS)
            assert seen["x-forwarded-for"] == "1.2.3.4, 127.0.0.1"
            assert seen["x-forwarded-proto"] == "https"
            assert seen["x-forwarded-host"] == "evil.example"

    run(scenario())


def test_a_gzip_body_goes_to_the_backend_as_sent() -> None:
    async def scenario() -> None:
        async with backends("a") as (a,), front(table_of({KEY: [a.address]})) as f:
            packed = gzip.compress(b'{"instances": [1]}')
            answer = await ask(
                f.port, request("/team/digits/x", packed, {"Content-Encoding": "gzip"})
            )
            assert answer.status == 201
            # The echo backend decodes it itself: it got the gzip bytes the client sent.
            assert a.seen[0]["body"] == b'{"instances": [1]}'
            # A body that is not gzip is the backend's to refuse (the echo backend fails on it
            # with aiohttp's plain-text 500): the activator passes it on untouched.
            answer = await ask(
                f.port, request("/team/digits/x", b"not gzip", {"Content-Encoding": "gzip"})
            )
            assert answer.headers["content-type"].startswith("text/plain")
            assert a.seen[0]["headers"]["Content-Encoding"] == "gzip"

    run(scenario())


# Logs ---------------------------------------------------------------------------------------


def test_a_refusal_is_one_log_line_without_a_traceback(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with front(table_of({}), max_request_bytes=10) as f:
            answer = await ask(f.port, request("/team/digits/x", b"x" * 11))
            assert answer.status == 413

    with caplog.at_level(logging.INFO, logger="sparsam"):
        run(scenario())
    records = [r for r in caplog.records if r.name.startswith("sparsam")]
    assert len(records) == 1, [r.getMessage() for r in records]
    (record,) = records
    assert record.levelno == logging.INFO
    assert record.exc_info is None
    assert "\n" not in record.getMessage()
    assert record.getMessage() == (
        "POST /team/digits/x from 127.0.0.1: 413 request body is larger than 10 bytes"
    )
