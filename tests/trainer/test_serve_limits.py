"""The model server against careless and hostile clients, in process on a loopback port: the
real application (connection guard and error middleware included) over real sockets, with the
tiny exported models. Every abusive request gets its 4xx quickly, costs bounded work, and leaves
one log line without a traceback; a fault of the server still logs its traceback."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import torch
from aiohttp import web
from tests.trainer import exported_models as tiny

from sparsam.httpserver.body import BodyLimits
from sparsam.httpserver.connections import ConnectionGuard, ConnectionLimits, GuardedSite
from sparsam_trainer.serve.app import ModelServer, build_app
from sparsam_trainer.serve.metrics import ServerMetrics

torch.set_num_threads(1)

MAX_REQUEST_BYTES = 1024 * 1024
MAX_TEXT_CHARS = 5_000
BLACK = [0] * 784
JSON = {"Content-Type": "application/json"}
APP_LOGGER = "sparsam_trainer.serve.app"


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.export_image(tiny.image_model(), tmp_path_factory.mktemp("image") / "model")


@pytest.fixture(scope="module")
def text_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.export_text(tiny.text_model(), tmp_path_factory.mktemp("text") / "model")


@asynccontextmanager
async def serving(model_dir: Path, **limits: Any) -> AsyncIterator[tuple[str, ModelServer]]:
    executor = ThreadPoolExecutor(max_workers=1)
    server = ModelServer(
        model_dir,
        max_batch=8,
        max_request_bytes=MAX_REQUEST_BYTES,
        executor=executor,
        metrics=ServerMetrics(),
        max_text_chars=MAX_TEXT_CHARS,
    )
    await server.load()
    guard = ConnectionGuard(ConnectionLimits(**limits))
    runner = web.AppRunner(build_app(server, [guard.middleware]))
    await runner.setup()
    site = GuardedSite(runner, "127.0.0.1", 0, guard)
    await site.start()
    try:
        yield f"http://127.0.0.1:{site.port}", server
    finally:
        await runner.cleanup()
        executor.shutdown(wait=True)


def run(coroutine: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coroutine, 120))  # type: ignore[arg-type]


async def post(
    url: str, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], float]:
    started = time.monotonic()
    async with (
        aiohttp.ClientSession(auto_decompress=False) as session,
        session.post(
            f"{url}/v1/predict",
            data=body,
            headers=headers if headers is not None else JSON,
            skip_auto_headers=("Content-Type",),
        ) as response,
    ):
        assert response.headers["Content-Type"].startswith("application/json")
        return response.status, await response.json(), time.monotonic() - started


def _instances(*instances: object) -> bytes:
    return json.dumps({"instances": list(instances)}).encode()


IMAGE_ABUSE: list[tuple[str, bytes, dict[str, str], int, str]] = [
    (
        "huge-integer",
        b'{"instances": [[' + b"9" * 5000 + b"]]}",
        JSON,
        400,
        "a number of 5000 characters; at most 64",
    ),
    (
        "nested-100000-deep",
        b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        JSON,
        400,
        "nested too deeply",
    ),
    (
        "not-gzip",
        b"this is not gzip",
        {**JSON, "Content-Encoding": "gzip"},
        400,
        "the request body cannot be read",
    ),
    (
        "gzip-bomb",
        gzip.compress(b" " * (MAX_REQUEST_BYTES * 20)),
        {**JSON, "Content-Encoding": "gzip"},
        413,
        f"request body is larger than {MAX_REQUEST_BYTES} bytes",
    ),
    (
        "unknown-encoding",
        _instances(BLACK),
        {**JSON, "Content-Encoding": "br, zstd"},
        415,
        "Content-Encoding 'br, zstd' is not accepted",
    ),
    (
        "form",
        _instances(BLACK),
        {"Content-Type": "application/x-www-form-urlencoded"},
        415,
        "is not JSON",
    ),
    ("text-plain", _instances(BLACK), {"Content-Type": "text/plain"}, 415, "is not JSON"),
    (
        "latin-1",
        _instances(BLACK),
        {"Content-Type": "application/json; charset=latin-1"},
        415,
        "charset 'latin-1' is not accepted",
    ),
    ("booleans", _instances([True] * 784), JSON, 400, "boolean where a pixel value belongs"),
    ("strings", _instances(["0"] * 784), JSON, 400, "string where a pixel value belongs"),
    (
        "ragged",
        _instances([[0] * 28] * 27 + [[0] * 27]),
        JSON,
        400,
        "a list of 27 where a list of 28 belongs",
    ),
    (
        "too-deep-for-the-model",
        _instances([[[[[0]]]]]),
        JSON,
        400,
        "got shape [1, 1, 1, 1] or deeper",
    ),
    ("too-large", b" " * (MAX_REQUEST_BYTES + 1), JSON, 413, "request body is larger than"),
    ("invalid-utf8", b'{"instances": ["\xff"]}', JSON, 400, "request body is not valid JSON"),
]


@pytest.mark.parametrize(
    ("body", "headers", "status", "message"),
    [case[1:] for case in IMAGE_ABUSE],
    ids=[case[0] for case in IMAGE_ABUSE],
)
def test_abusive_requests_get_a_quick_4xx_and_one_log_line(
    image_dir: Path,
    caplog: pytest.LogCaptureFixture,
    body: bytes,
    headers: dict[str, str],
    status: int,
    message: str,
) -> None:
    async def scenario() -> None:
        async with serving(image_dir) as (url, _):
            caplog.clear()
            got, answer, seconds = await post(url, body, headers)
            assert (got, message in answer["error"]) == (status, True), answer
            assert seconds < 2
            # Still serving.
            assert (await post(url, _instances(BLACK)))[0] == 200

    with caplog.at_level(logging.INFO):
        run(scenario())
    assert_one_line(caplog, status)


def assert_one_line(caplog: pytest.LogCaptureFixture, status: int) -> None:
    records = [r for r in caplog.records if r.name.startswith("sparsam")]
    assert len(records) == 1, [r.getMessage() for r in records]
    (record,) = records
    assert record.name == APP_LOGGER
    assert record.levelno == logging.INFO
    assert record.exc_info is None
    assert "\n" not in record.getMessage()
    assert f"POST /v1/predict from 127.0.0.1: {status} " in record.getMessage()


TEXT_ABUSE: list[tuple[str, bytes, int, str]] = [
    (
        "lone-surrogate",
        b'{"instances": ["ok", "\\ud800 alone"]}',
        400,
        "instances[1]: not valid Unicode",
    ),
    (
        "long-text",
        _instances("word " * (MAX_TEXT_CHARS // 5) + "x"),
        400,
        f"instances[0]: the text has {MAX_TEXT_CHARS + 1} characters; at most {MAX_TEXT_CHARS}",
    ),
    ("number", _instances(7), 400, "instances[0]: expected a string, got number"),
]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [case[1:] for case in TEXT_ABUSE],
    ids=[case[0] for case in TEXT_ABUSE],
)
def test_text_instances_are_checked_before_tokenizing(
    text_dir: Path, caplog: pytest.LogCaptureFixture, body: bytes, status: int, message: str
) -> None:
    async def scenario() -> None:
        async with serving(text_dir) as (url, _):
            caplog.clear()
            got, answer, seconds = await post(url, body)
            assert (got, message in answer["error"]) == (status, True), answer
            assert seconds < 2

    with caplog.at_level(logging.INFO):
        run(scenario())
    assert_one_line(caplog, status)


def test_a_string_as_large_as_the_body_allows_costs_little(text_dir: Path) -> None:
    """The 10 MB string that took 13 s: refused by its length, never tokenized."""

    async def scenario() -> None:
        async with serving(text_dir) as (url, server):
            server.body_limits = BodyLimits(max_bytes=16 * 1024 * 1024)
            got, answer, seconds = await post(url, _instances("a" * 10_000_000))
            assert got == 400
            assert "at most 5000" in answer["error"]
            assert seconds < 3

    run(scenario())


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "application/json; charset=utf-8"},
        {"Content-Type": "application/vnd.predict+json"},
        {},
    ],
    ids=["json-utf8", "json-suffix", "no-content-type"],
)
def test_json_and_gzip_bodies_are_served(image_dir: Path, headers: dict[str, str]) -> None:
    async def scenario() -> None:
        async with serving(image_dir) as (url, _):
            assert (await post(url, _instances(BLACK), headers))[0] == 200
            packed = gzip.compress(_instances(BLACK, BLACK))
            got, answer, _ = await post(url, packed, {**headers, "Content-Encoding": "gzip"})
            assert got == 200
            assert len(answer["predictions"]) == 2

    run(scenario())


def test_a_fault_of_the_server_is_500_with_its_traceback_in_the_log(
    image_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: object) -> Any:
        raise RuntimeError("a bug")

    async def scenario() -> None:
        async with serving(image_dir) as (url, server):
            server.run_prediction = broken  # type: ignore[method-assign]
            got, answer, _ = await post(url, _instances(BLACK))
            assert got == 500
            assert "a bug" not in json.dumps(answer)

    with caplog.at_level(logging.INFO):
        run(scenario())
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None


def test_a_trickled_body_is_cut_with_408(image_dir: Path) -> None:
    async def scenario() -> None:
        async with serving(image_dir) as (url, server):
            server.body_limits = BodyLimits(
                max_bytes=MAX_REQUEST_BYTES, idle_timeout=5, min_rate=1000, grace=0.3
            )
            port = int(url.rsplit(":", 1)[1])
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 5000\r\n\r\n{"
            )
            started = time.monotonic()
            head = b""
            for _ in range(40):  # a byte every 0.1 s, far below 1000 bytes/s
                writer.write(b" ")
                await writer.drain()
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 0.1)
                    break
                except TimeoutError:
                    continue
            writer.close()
            assert head.startswith(b"HTTP/1.1 408")
            assert time.monotonic() - started < 3

    run(scenario())


def test_headers_that_never_end_are_cut(image_dir: Path) -> None:
    async def scenario() -> None:
        async with serving(image_dir, header_timeout=0.5) as (url, _):
            port = int(url.rsplit(":", 1)[1])
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\n")
            started = time.monotonic()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            writer.close()
            assert head.startswith(b"HTTP/1.1 408")
            assert time.monotonic() - started < 3

    run(scenario())
