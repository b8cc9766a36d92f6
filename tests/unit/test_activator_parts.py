"""The activator's parts without HTTP: pod readiness, paths, headers, the backend table, the
waker and its throttle, the Kubernetes view's event handling, and the command line."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client.exceptions import ApiException
from multidict import CIMultiDict

from sparsam.activator import cli
from sparsam.activator.app import split_path
from sparsam.activator.backends import (
    BackendTable,
    ServiceKey,
    parse_backend,
    pod_address,
    static_backends,
)
from sparsam.activator.forward import forwarded_headers, returned_headers
from sparsam.activator.kube import KubeBackends
from sparsam.activator.wake import KubeWaker, ServiceNotFoundError, ThrottledWaker, wake_timestamp

KEY: ServiceKey = ("team", "digits")
MiB = 1024 * 1024
CHART = Path(__file__).resolve().parents[2] / "charts" / "sparsam"


def pod(
    *,
    phase: str = "Running",
    ip: str | None = "127.1.0.7",
    ready: str = "True",
    deleting: bool = False,
    ports: list[dict[str, Any]] | None = None,
    name: str = "digits-0",
    service: str = "digits",
    uid: str = "uid-0",
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": "team",
        "uid": uid,
        "labels": {"sparsam.dev/inference-service": service},
    }
    if deleting:
        metadata["deletionTimestamp"] = "2026-11-22T07:00:00Z"
    status: dict[str, Any] = {"phase": phase, "conditions": [{"type": "Ready", "status": ready}]}
    if ip:
        status["podIP"] = ip
    if ports is None:
        ports = [{"name": "http", "containerPort": 8080}]
    return {
        "metadata": metadata,
        "spec": {"containers": [{"name": "sidecar"}, {"name": "server", "ports": ports}]},
        "status": status,
    }


@pytest.mark.parametrize(
    ("body", "address"),
    [
        (pod(), "127.1.0.7:8080"),
        (pod(phase="Pending"), None),
        (pod(ip=None), None),
        (pod(ready="False"), None),
        (pod(deleting=True), None),
        (pod(ports=[{"name": "metrics", "containerPort": 9090}]), None),
        (
            pod(
                ports=[
                    {"name": "grpc", "containerPort": 9000},
                    {"name": "http", "containerPort": 8000},
                ]
            ),
            "127.1.0.7:8000",
        ),
        (pod(ip="fd00::5"), "[fd00::5]:8080"),
        ({"metadata": {}}, None),
    ],
    ids=[
        "ready",
        "pending",
        "no-ip",
        "not-ready",
        "terminating",
        "no-http-port",
        "http-port-among-others",
        "ipv6",
        "empty",
    ],
)
def test_pod_address(body: dict[str, Any], address: str | None) -> None:
    assert pod_address(body) == address


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/team/digits/v1/predict", (("team", "digits"), "/v1/predict")),
        ("/team/digits", (("team", "digits"), "/")),
        ("/team/digits/", (("team", "digits"), "/")),
        ("/team/my.model/a%2Fb", (("team", "my.model"), "/a%2Fb")),
        ("/", None),
        ("/team", None),
        ("/team/", None),
        ("/Team/digits/x", None),
        ("/team/-digits/x", None),
        ("//digits/x", None),
    ],
    ids=[
        "path",
        "no-rest",
        "trailing-slash",
        "dotted-name-encoded-rest",
        "root",
        "namespace-only",
        "empty-name",
        "upper-case",
        "leading-dash",
        "empty-namespace",
    ],
)
def test_split_path(raw: str, expected: tuple[ServiceKey, str] | None) -> None:
    assert split_path(raw) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("team/digits=127.0.0.1:8080", (("team", "digits"), "127.0.0.1:8080")),
        ("team/digits=localhost:80", (("team", "digits"), "localhost:80")),
        ("team/digits=[::1]:8080", (("team", "digits"), "[::1]:8080")),
        ("digits=127.0.0.1:8080", "NAMESPACE/NAME=HOST:PORT"),
        ("team/digits", "NAMESPACE/NAME=HOST:PORT"),
        ("team/digits=127.0.0.1", "NAMESPACE/NAME=HOST:PORT"),
        ("Team/digits=127.0.0.1:8080", "NAMESPACE/NAME=HOST:PORT"),
        ("team/digits=127.0.0.1:http", "port must be a number"),
        ("team/digits=127.0.0.1:70000", "port must be a number"),
    ],
    ids=[
        "ip",
        "hostname",
        "ipv6",
        "no-namespace",
        "no-address",
        "no-port",
        "bad-name",
        "named-port",
        "port-too-big",
    ],
)
def test_parse_backend(text: str, expected: object) -> None:
    if isinstance(expected, str):
        with pytest.raises(ValueError, match=re.escape(expected)):
            parse_backend(text)
    else:
        assert parse_backend(text) == expected


@pytest.mark.parametrize(
    ("incoming", "forwarded"),
    [
        (
            [("Content-Type", "application/json"), ("X-Request-Id", "7"), ("Host", "front:80")],
            [
                ("Content-Type", "application/json"),
                ("X-Request-Id", "7"),
                ("X-Forwarded-For", "10.0.0.9"),
                ("X-Forwarded-Host", "front:80"),
                ("X-Forwarded-Proto", "http"),
            ],
        ),
        (
            [
                ("Connection", "keep-alive, X-Hop"),
                ("X-Hop", "1"),
                ("Keep-Alive", "5"),
                ("Transfer-Encoding", "chunked"),
                ("Upgrade", "h2c"),
                ("TE", "trailers"),
                ("Proxy-Authorization", "secret"),
                ("Content-Length", "12"),
                ("Accept", "*/*"),
            ],
            [
                ("Accept", "*/*"),
                ("X-Forwarded-For", "10.0.0.9"),
                ("X-Forwarded-Host", "front:80"),
                ("X-Forwarded-Proto", "http"),
            ],
        ),
        (
            [
                ("X-Forwarded-For", "1.2.3.4"),
                ("X-Forwarded-For", "5.6.7.8"),
                ("X-Forwarded-Proto", "https"),
                ("X-Forwarded-Host", "evil.example"),
                ("X-Forwarded-Port", "443"),
                ("Forwarded", "for=1.2.3.4"),
                ("X-Real-IP", "1.2.3.4"),
            ],
            [
                ("X-Forwarded-For", "10.0.0.9"),
                ("X-Forwarded-Host", "front:80"),
                ("X-Forwarded-Proto", "http"),
            ],
        ),
    ],
    ids=["end-to-end-headers-kept", "hop-by-hop-dropped", "client-claims-replaced"],
)
def test_forwarded_headers(
    incoming: list[tuple[str, str]], forwarded: list[tuple[str, str]]
) -> None:
    out = forwarded_headers(CIMultiDict(incoming), remote="10.0.0.9", host="front:80")
    assert sorted(out.items()) == sorted(forwarded)


def test_forwarded_headers_of_a_trusted_proxy_are_kept_and_extended() -> None:
    incoming = CIMultiDict(
        [
            ("X-Forwarded-For", "1.2.3.4"),
            ("X-Forwarded-For", "5.6.7.8"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "models.example"),
        ]
    )
    out = forwarded_headers(incoming, remote="10.0.0.9", host="front:80", trusted=True)
    assert sorted(out.items()) == [
        ("X-Forwarded-For", "1.2.3.4, 5.6.7.8, 10.0.0.9"),
        ("X-Forwarded-Host", "models.example"),
        ("X-Forwarded-Proto", "https"),
    ]


def test_returned_headers_drop_hop_by_hop_and_length_keep_the_rest() -> None:
    incoming = CIMultiDict(
        [
            ("Content-Type", "application/json"),
            ("Set-Cookie", "a=1"),
            ("Set-Cookie", "b=2"),
            ("Connection", "close"),
            ("Content-Length", "3"),
            ("Content-Encoding", "gzip"),
        ]
    )
    assert sorted(returned_headers(incoming).items()) == [
        ("Content-Encoding", "gzip"),
        ("Content-Type", "application/json"),
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
    ]


# BackendTable -------------------------------------------------------------------------------


def test_table_wakes_waiters_on_a_change_only() -> None:
    async def scenario() -> None:
        table = static_backends([(KEY, "127.0.0.1:2"), (KEY, "127.0.0.1:1")])
        assert table.synced() and table.known(KEY)
        assert table.ready(KEY) == ("127.0.0.1:1", "127.0.0.1:2")
        waiter = asyncio.create_task(table.changed(KEY))
        await asyncio.sleep(0)
        table.set_ready(KEY, ["127.0.0.1:2", "127.0.0.1:1"])  # the same set: no change
        table.set_ready(("team", "other"), ["127.0.0.1:3"])  # another service
        await asyncio.sleep(0.01)
        assert not waiter.done()
        table.replace_ready({})
        await asyncio.wait_for(waiter, 1)
        assert table.ready(KEY) == ()
        waiter = asyncio.create_task(table.changed(KEY))
        await asyncio.sleep(0)
        table.remove_service(KEY)
        await asyncio.wait_for(waiter, 1)
        assert not table.known(KEY)

    asyncio.run(scenario())


def test_table_wakes_everyone_when_first_synced() -> None:
    async def scenario() -> None:
        table = BackendTable()
        waiters = [asyncio.create_task(table.changed((ns, "x"))) for ns in ("a", "b")]
        await asyncio.sleep(0)
        table.mark_synced()
        await asyncio.wait_for(asyncio.gather(*waiters), 1)

    asyncio.run(scenario())


# The Kubernetes view, fed its events directly (what the watch threads hand to the loop).


def test_kube_backends_follow_pods_and_services() -> None:
    view = KubeBackends.__new__(KubeBackends)
    view.table = BackendTable()
    view._pods = {}
    view._listed = set()
    view._pods_listed(
        [
            pod(uid="a", ip="127.1.0.1"),
            pod(uid="b", ip="127.1.0.2", ready="False"),
            pod(uid="c", ip="127.1.0.3", service="news"),
        ]
    )
    assert not view.synced()  # InferenceServices not listed yet
    view._services_listed([{"metadata": {"namespace": "team", "name": "digits"}}])
    assert view.synced()
    assert view.known(KEY) and not view.known(("team", "news"))
    assert list(view.ready(KEY)) == ["127.1.0.1:8080"]
    assert list(view.ready(("team", "news"))) == ["127.1.0.3:8080"]
    view._pod("MODIFIED", pod(uid="b", ip="127.1.0.2"))
    assert list(view.ready(KEY)) == ["127.1.0.1:8080", "127.1.0.2:8080"]
    view._pod("MODIFIED", pod(uid="a", ip="127.1.0.1", deleting=True))
    view._pod("DELETED", pod(uid="b", ip="127.1.0.2"))
    assert list(view.ready(KEY)) == []
    view._service("ADDED", {"metadata": {"namespace": "team", "name": "news"}})
    view._service("DELETED", {"metadata": {"namespace": "team", "name": "digits"}})
    assert view.services() == {("team", "news")}
    # A fresh list replaces everything the watch said before.
    view._pods_listed([pod(uid="z", ip="127.1.0.9")])
    assert list(view.ready(KEY)) == ["127.1.0.9:8080"]
    assert list(view.ready(("team", "news"))) == []


# Waking ------------------------------------------------------------------------------------


class FakeCustomObjects:
    def __init__(self, status: int | None = None) -> None:
        self.status = status
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def patch_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.calls.append((args, kwargs))
        if self.status is not None:
            raise ApiException(status=self.status, reason="Nope")
        return {}


def kube_waker(custom: FakeCustomObjects) -> KubeWaker:
    waker = KubeWaker.__new__(KubeWaker)
    waker._custom = custom  # type: ignore[assignment]
    waker._now = lambda: datetime(2026, 11, 22, 7, 0, 1, 123456, tzinfo=UTC)
    return waker


def test_kube_waker_merge_patches_the_annotation() -> None:
    custom = FakeCustomObjects()
    asyncio.run(kube_waker(custom).wake(KEY))
    ((args, kwargs),) = custom.calls
    assert args == (
        "sparsam.dev",
        "v1alpha1",
        "team",
        "inferenceservices",
        "digits",
        {
            "metadata": {
                "annotations": {"sparsam.dev/wake-requested-at": "2026-11-22T07:00:01.123456Z"}
            }
        },
    )
    assert kwargs["_content_type"] == "application/merge-patch+json"


@pytest.mark.parametrize(
    ("status", "error"),
    [(404, ServiceNotFoundError), (403, ApiException), (500, ApiException)],
    ids=["not-found", "forbidden", "server-error"],
)
def test_kube_waker_errors(status: int, error: type[Exception]) -> None:
    with pytest.raises(error):
        asyncio.run(kube_waker(FakeCustomObjects(status)).wake(KEY))


def test_wake_timestamp_is_utc_with_microseconds() -> None:
    local = datetime(2026, 11, 22, 8, 0, 1, 5, tzinfo=UTC).astimezone()
    assert wake_timestamp(local) == "2026-11-22T08:00:01.000005Z"


class CountingWaker:
    def __init__(self, error: Exception | None = None) -> None:
        self.calls = 0
        self.error = error

    async def wake(self, key: ServiceKey) -> None:
        self.calls += 1
        await asyncio.sleep(0)
        if self.error is not None:
            raise self.error


@pytest.mark.parametrize(
    ("times", "calls"),
    [
        ([0.0], 1),
        ([0.0, 0.1, 0.5, 0.99], 1),
        ([0.0, 1.0], 2),
        ([0.0, 0.5, 1.0, 1.05, 1.9, 2.0, 2.5], 3),
        ([0.0, 10.0, 20.0], 3),
    ],
    ids=["one", "burst-in-one-interval", "interval-apart", "steady-trickle", "far-apart"],
)
def test_throttle_asks_once_per_interval(times: list[float], calls: int) -> None:
    async def scenario() -> None:
        now = 0.0
        inner = CountingWaker()
        throttle = ThrottledWaker(inner, interval=1.0, clock=lambda: now)
        for at in times:
            now = at
            await throttle.wake(KEY)
        await throttle.wake(("team", "other"))  # another service has its own interval
        assert inner.calls == calls + 1

    asyncio.run(scenario())


def test_throttle_shares_not_found_and_swallows_other_failures() -> None:
    async def scenario() -> None:
        missing = ThrottledWaker(CountingWaker(ServiceNotFoundError("gone")))
        results = await asyncio.gather(
            *(missing.wake(KEY) for _ in range(5)), return_exceptions=True
        )
        assert all(isinstance(r, ServiceNotFoundError) for r in results)
        failing = ThrottledWaker(CountingWaker(RuntimeError("apiserver down")))
        await failing.wake(KEY)  # logged, not raised: the request keeps waiting

    asyncio.run(scenario())


# Command line -------------------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    cli.add_parser(commands)
    return parser.parse_args(["activator", *argv])


def test_cli_defaults() -> None:
    args = parse()
    listen_all = "0.0.0.0"  # noqa: S104 - the default a pod needs
    assert (args.host, args.port, args.hold_timeout, args.max_held) == (
        listen_all,
        8081,
        60.0,
        1000,
    )
    assert (args.backend, args.kubeconfig, args.log_format) == ([], None, "text")
    # Buffered bytes that fit the chart's 512Mi limit; nobody's forwarding headers trusted.
    assert (args.max_request_bytes, args.max_buffered_bytes_per_service) == (16 * MiB, 64 * MiB)
    assert args.max_buffered_bytes == 160 * MiB
    assert (args.header_timeout, args.body_timeout, args.body_min_rate, args.body_grace) == (
        10.0,
        10.0,
        16384.0,
        5.0,
    )
    assert (args.idle_timeout, args.max_connections, args.trusted_proxy) == (75.0, 1000, [])


def test_the_charts_activator_arguments_parse() -> None:
    """The flags charts/sparsam's activator Deployment passes, with the chart's values."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())["activator"]
    template = (CHART / "templates" / "activator.yaml").read_text()
    argv = []
    for flag, value in re.findall(
        r"- (--[a-z-]+)=\{\{ (?:int64 )?\.Values\.activator\.(\w+) \}\}", template
    ):
        argv.append(f"{flag}={values[value]}")
    assert "--max-buffered-bytes=167772160" in argv
    args = parse(*argv)
    assert args.max_buffered_bytes == 160 * MiB
    assert args.body_min_rate == 16384.0


@pytest.mark.parametrize(
    ("argv", "attribute", "value"),
    [
        (["--hold-timeout", "90s"], "hold_timeout", 90.0),
        (["--hold-timeout", "2m"], "hold_timeout", 120.0),
        (["--hold-timeout", "0.5"], "hold_timeout", 0.5),
        (["--max-held", "5"], "max_held", 5),
        (
            ["--backend", "a/b=127.0.0.1:1", "--backend", "a/b=127.0.0.1:2"],
            "backend",
            [(("a", "b"), "127.0.0.1:1"), (("a", "b"), "127.0.0.1:2")],
        ),
        (["--log-format", "json"], "log_format", "json"),
        (["--max-buffered-bytes", "1048576"], "max_buffered_bytes", 1048576),
        (["--max-buffered-bytes-per-service", "4096"], "max_buffered_bytes_per_service", 4096),
        (["--header-timeout", "5s"], "header_timeout", 5.0),
        (["--body-timeout", "1m"], "body_timeout", 60.0),
        (["--body-min-rate", "0"], "body_min_rate", 0.0),
        (["--idle-timeout", "90s"], "idle_timeout", 90.0),
        (["--max-connections", "10"], "max_connections", 10),
        (
            ["--trusted-proxy", "10.0.0.0/8", "--trusted-proxy", "fd00::1"],
            "trusted_proxy",
            [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::1/128")],
        ),
    ],
    ids=[
        "duration",
        "minutes",
        "seconds",
        "max-held",
        "backends",
        "json-logs",
        "buffered",
        "buffered-per-service",
        "header-timeout",
        "body-timeout",
        "no-min-rate",
        "idle-timeout",
        "max-connections",
        "trusted-proxies",
    ],
)
def test_cli_flags(argv: list[str], attribute: str, value: object) -> None:
    assert getattr(parse(*argv), attribute) == value


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--hold-timeout", "-1"], "must not be negative"),
        (["--hold-timeout", "inf"], "must not be negative"),
        (["--hold-timeout", "soon"], "is not a duration"),
        (["--max-held", "0"], "at least 1"),
        (["--port", "70000"], "port from 1 to 65535"),
        (["--backend", "digits=127.0.0.1:8080"], "NAMESPACE/NAME=HOST:PORT"),
        (["--max-buffered-bytes", "0"], "at least 1"),
        (["--body-min-rate", "-5"], "expected bytes a second"),
        (["--trusted-proxy", "everyone"], "expected an address or CIDR"),
    ],
    ids=[
        "negative",
        "infinite",
        "not-a-duration",
        "zero-held",
        "port",
        "backend",
        "zero-buffered",
        "negative-rate",
        "not-a-network",
    ],
)
def test_cli_rejects(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse(*argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
