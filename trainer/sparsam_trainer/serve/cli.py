"""``python -m sparsam_trainer serve``: the command line of the model server.

The manifest is checked before the server starts listening, so a wrong ``--model-dir`` is a usage
error (exit 2) with one clear line, not a pod that listens and never becomes ready.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from sparsam_trainer import exitcodes
from sparsam_trainer.arguments import PORT, POSITIVE, SECONDS
from sparsam_trainer.export import MAX_TEXT_CHARS, ExportError, read_manifest
from sparsam_trainer.serve.server import ServerConfig, serve

DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024


def _available_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sparsam_trainer serve",
        description="Serve an exported model over HTTP (POST /v1/predict, /healthz, /readyz, "
        "/metrics).",
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        required=True,
        help="directory written by export_model (manifest.json, model.ts, ...)",
    )
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default: all)")  # noqa: S104
    parser.add_argument("--port", type=PORT, default=8080, help="port to listen on (8080)")
    parser.add_argument(
        "--threads",
        type=POSITIVE,
        default=_available_cpus(),
        help="torch intra-op threads; set it to the pod's CPU limit (default: CPUs available)",
    )
    parser.add_argument(
        "--max-batch",
        type=POSITIVE,
        default=64,
        help="most instances accepted in one request (64)",
    )
    parser.add_argument(
        "--max-request-bytes",
        type=POSITIVE,
        default=DEFAULT_MAX_REQUEST_BYTES,
        help=f"largest request body accepted ({DEFAULT_MAX_REQUEST_BYTES})",
    )
    parser.add_argument(
        "--max-text-chars",
        type=POSITIVE,
        default=MAX_TEXT_CHARS,
        help="longest text instance accepted, in characters; longer is 400 (text models only; "
        f"{MAX_TEXT_CHARS})",
    )
    parser.add_argument(
        "--grace-period",
        type=SECONDS,
        default=25.0,
        help="seconds to let in-flight requests finish after SIGTERM (25, under Kubernetes' "
        "default terminationGracePeriodSeconds of 30)",
    )
    parser.add_argument(
        "--shutdown-delay",
        type=SECONDS,
        default=0.0,
        help="seconds to keep serving, unready, after SIGTERM before closing the listener, while "
        "endpoints stop routing to this pod (0)",
    )
    parser.add_argument(
        "--access-log", action="store_true", help="log one line per request (off by default)"
    )
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        read_manifest(args.model_dir)
    except ExportError as error:
        print(f"serve: --model-dir: {error}", file=sys.stderr)
        return exitcodes.USAGE
    config = ServerConfig(
        model_dir=args.model_dir,
        host=args.host,
        port=args.port,
        threads=args.threads,
        max_batch=args.max_batch,
        max_request_bytes=args.max_request_bytes,
        grace_seconds=args.grace_period,
        shutdown_delay=args.shutdown_delay,
        access_log=args.access_log,
        max_text_chars=args.max_text_chars,
    )
    return asyncio.run(serve(config))
