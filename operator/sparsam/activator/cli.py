"""``sparsam activator``: the command line of the activator.

`add_parser` adds the subcommand to the ``sparsam`` command's subparsers and `run` runs it;
``python -m sparsam.activator`` runs the same parser on its own.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import math
from pathlib import Path
from typing import Any

from sparsam import logs
from sparsam.activator.app import Activator, ActivatorConfig
from sparsam.activator.backends import ServiceKey, parse_backend, static_backends
from sparsam.activator.server import ListenConfig, serve
from sparsam.activator.wake import LoggingWaker, ThrottledWaker
from sparsam.api.parse import parse_duration

DESCRIPTION = (
    "Receive traffic for InferenceServices at /<namespace>/<name>/<path> and forward it to a "
    "ready replica; while a service has none (scaled to zero, waking) hold its requests and ask "
    "the operator to wake it. In a pod it uses its service account; elsewhere --kubeconfig, "
    "else $KUBECONFIG or ~/.kube/config; with --backend it needs no cluster at all."
)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``activator`` to the subparsers of ``sparsam``; returns its parser."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "activator",
        help="the activator: route, hold and wake InferenceService traffic",
        description=DESCRIPTION,
    )
    configure(parser)
    return parser


def configure(parser: argparse.ArgumentParser) -> None:
    defaults = ActivatorConfig()
    listen = ListenConfig()
    parser.add_argument("--kubeconfig", type=Path, default=None)
    parser.add_argument("--host", default=listen.host, help=f"address to listen on ({listen.host})")
    parser.add_argument(
        "--port", type=_port, default=listen.port, help=f"port to listen on ({listen.port})"
    )
    parser.add_argument(
        "--hold-timeout",
        type=_seconds,
        default=defaults.hold_timeout,
        metavar="DURATION",
        help="how long a request waits for a ready replica before it is answered 503, in "
        f"seconds or as 90s, 2m (default {defaults.hold_timeout:g}s)",
    )
    parser.add_argument(
        "--max-held",
        type=_positive,
        default=defaults.max_held,
        metavar="N",
        help="most requests held at once per InferenceService; more are answered 503 at once "
        f"(default {defaults.max_held})",
    )
    parser.add_argument(
        "--backend",
        action="append",
        type=_backend,
        default=[],
        metavar="NAMESPACE/NAME=HOST:PORT",
        help="static mode (repeatable): route NAMESPACE/NAME to HOST:PORT without Kubernetes; "
        "no InferenceService is watched and nothing is woken",
    )
    parser.add_argument(
        "--grace-period",
        type=_seconds,
        default=listen.grace_seconds,
        metavar="DURATION",
        help="after SIGTERM: how long in-flight requests may take to finish (default "
        f"{listen.grace_seconds:g}s; held ones get their 503 a second before)",
    )
    parser.add_argument(
        "--upstream-timeout",
        type=_seconds,
        default=defaults.upstream_timeout,
        metavar="DURATION",
        help="how long a replica may take to answer before the client gets 504 (default "
        f"{defaults.upstream_timeout:g}s)",
    )
    parser.add_argument(
        "--max-request-bytes",
        type=_positive,
        default=defaults.max_request_bytes,
        metavar="BYTES",
        help=f"largest request body accepted; larger is 413 ({defaults.max_request_bytes})",
    )
    parser.add_argument(
        "--max-buffered-bytes-per-service",
        type=_positive,
        default=defaults.max_buffered_bytes_per_service,
        metavar="BYTES",
        help="request body bytes kept in memory (held or being forwarded) for one "
        "InferenceService; a request that would pass it is answered 503 with Retry-After "
        f"(default {defaults.max_buffered_bytes_per_service})",
    )
    parser.add_argument(
        "--max-buffered-bytes",
        type=_positive,
        default=defaults.max_buffered_bytes,
        metavar="BYTES",
        help="request body bytes kept in memory in all; keep it well under the container's "
        f"memory limit (default {defaults.max_buffered_bytes}, for a 512Mi limit)",
    )
    parser.add_argument(
        "--body-timeout",
        type=_seconds,
        default=defaults.body_timeout,
        metavar="DURATION",
        help="longest wait for the next chunk of a request body; slower is 408 "
        f"(default {defaults.body_timeout:g}s)",
    )
    parser.add_argument(
        "--body-min-rate",
        type=_rate,
        default=defaults.body_min_rate,
        metavar="BYTES_PER_SECOND",
        help="least average rate of a request body after --body-grace; slower is 408, 0 turns "
        f"it off (default {defaults.body_min_rate:g})",
    )
    parser.add_argument(
        "--body-grace",
        type=_seconds,
        default=defaults.body_grace,
        metavar="DURATION",
        help=f"time a body has before --body-min-rate applies (default {defaults.body_grace:g}s)",
    )
    parser.add_argument(
        "--header-timeout",
        type=_seconds,
        default=listen.header_timeout,
        metavar="DURATION",
        help="a request's headers must be complete this long after its first byte (after the "
        f"connection opens, for its first request); else 408 (default {listen.header_timeout:g}s)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=_seconds,
        default=listen.idle_timeout,
        metavar="DURATION",
        help="close a keep-alive connection idle this long; keep it above the idle timeout of "
        f"proxies in front (default {listen.idle_timeout:g}s)",
    )
    parser.add_argument(
        "--max-connections",
        type=_positive,
        default=listen.max_connections,
        metavar="N",
        help="open client connections at most; more are answered 503 and closed at once "
        f"(default {listen.max_connections})",
    )
    parser.add_argument(
        "--trusted-proxy",
        action="append",
        type=_network,
        default=[],
        metavar="CIDR",
        help="(repeatable) a proxy in front whose X-Forwarded-For/-Host/-Proto are kept, the "
        "peer appended to X-Forwarded-For; from anyone else these headers are replaced "
        "(default: nobody is trusted)",
    )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="json: one JSON object per log record (default text)",
    )
    parser.add_argument(
        "--access-log", action="store_true", help="log one line per request (off by default)"
    )


def run(args: argparse.Namespace) -> int:
    """Run the activator until SIGTERM/SIGINT; the exit code."""
    logs.configure(args.log_format)
    config = ActivatorConfig(
        hold_timeout=args.hold_timeout,
        max_held=args.max_held,
        upstream_timeout=args.upstream_timeout,
        max_request_bytes=args.max_request_bytes,
        max_buffered_bytes_per_service=args.max_buffered_bytes_per_service,
        max_buffered_bytes=args.max_buffered_bytes,
        body_timeout=args.body_timeout,
        body_min_rate=args.body_min_rate,
        body_grace=args.body_grace,
        trusted_proxies=tuple(args.trusted_proxy),
    )
    listen = ListenConfig(
        host=args.host,
        port=args.port,
        grace_seconds=args.grace_period,
        access_log=args.access_log,
        max_connections=args.max_connections,
        header_timeout=args.header_timeout,
        idle_timeout=args.idle_timeout,
    )
    backend_flags: list[tuple[ServiceKey, str]] = args.backend
    if backend_flags:
        return asyncio.run(_serve_static(backend_flags, config, listen))
    return asyncio.run(_serve_kube(args.kubeconfig, config, listen))


async def _serve_static(
    backends: list[tuple[ServiceKey, str]], config: ActivatorConfig, listen: ListenConfig
) -> int:
    table = static_backends(backends)
    for key in sorted(table.services()):
        logging.getLogger(__name__).info(
            "static backend %s/%s -> %s", *key, ", ".join(table.ready(key))
        )
    waker = ThrottledWaker(LoggingWaker(), config.wake_interval)
    return await serve(Activator(table, waker, config), listen)


async def _serve_kube(
    kubeconfig: Path | None, config: ActivatorConfig, listen: ListenConfig
) -> int:
    # The kubernetes client (and its import time) only when a cluster is used.
    from sparsam.activator.kube import KubeBackends
    from sparsam.activator.wake import KubeWaker
    from sparsam.kube.client import api_client

    api = api_client(kubeconfig)
    backends = KubeBackends(api)
    backends.start()
    try:
        waker = ThrottledWaker(KubeWaker(api), config.wake_interval)
        return await serve(Activator(backends, waker, config), listen)
    finally:
        backends.stop()


def _seconds(text: str) -> float:
    """Seconds as a number (``60``, ``0.5``) or a duration (``90s``, ``2m``)."""
    try:
        value = float(text)
    except ValueError:
        try:
            value = parse_duration(text).total_seconds()
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must not be negative")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number of at least 1")
    return value


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected bytes a second, 0 or more")
    return value


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected an address or CIDR ({error})"
        ) from None


def _port(text: str) -> int:
    value = _positive(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a port from 1 to 65535")
    return value


def _backend(text: str) -> tuple[ServiceKey, str]:
    try:
        return parse_backend(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
