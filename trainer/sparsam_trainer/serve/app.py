"""The HTTP application: routes, request validation, and the model's lifecycle phases.

Handlers never run the model on the event loop: inference (and the tokenizing or pixel checks
before it) goes to a single inference thread, so probes and metrics answer while a batch runs,
and requests queue in arrival order instead of competing for the same CPU cores. Every error a
client can cause is a JSON ``{"error": "..."}`` that says what to fix; anything else is logged
here and answered with a generic 500, never a traceback.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from pathlib import Path

from aiohttp import web

from sparsam_trainer.export import (
    FORMAT,
    ExportedModel,
    InvalidInstancesError,
    Prediction,
    json_type,
    load_exported,
)
from sparsam_trainer.serve.metrics import CONTENT_TYPE_LATEST, ServerMetrics

logger = logging.getLogger(__name__)

# Seconds a client should wait before retrying while the model loads or the server drains; short,
# because loading usually takes seconds and a draining pod's traffic moves to other replicas.
RETRY_AFTER_SECONDS = 1


class Phase(enum.Enum):
    LOADING = "loading"
    READY = "ready"
    DRAINING = "shutting down"


class BadRequestError(ValueError):
    """The request body is not a prediction request; the message says why."""


class ModelServer:
    """What the handlers share: the phase, the model once loaded, metrics and the executor."""

    def __init__(
        self,
        model_dir: Path,
        *,
        max_batch: int,
        max_request_bytes: int,
        executor: Executor,
        metrics: ServerMetrics,
    ) -> None:
        self.model_dir = model_dir
        self.max_batch = max_batch
        self.max_request_bytes = max_request_bytes
        self.executor = executor
        self.metrics = metrics
        self.phase = Phase.LOADING
        self.model: ExportedModel | None = None

    async def load(self) -> tuple[str, float]:
        """Load the model and run one inference, off the event loop; then report ready.

        Returns the model's task and the seconds loading took."""
        started = time.perf_counter()
        model = await asyncio.get_running_loop().run_in_executor(self.executor, self._load)
        self.model = model
        seconds = time.perf_counter() - started
        self.metrics.model_load.set(seconds)
        self.metrics.model_info.labels(task=model.task, format=FORMAT).set(1)
        if self.phase is Phase.LOADING:
            self.phase = Phase.READY
            self.metrics.ready.set(1)
        return model.task, seconds

    def _load(self) -> ExportedModel:
        model = load_exported(self.model_dir)
        # The first call pays for lazy initialisation (allocator, kernels, tokenizer caches);
        # paying it here keeps it out of the first user's latency.
        model.predict([model.example_instance()])
        return model

    def drain(self) -> None:
        self.phase = Phase.DRAINING
        self.metrics.ready.set(0)

    def run_prediction(self, model: ExportedModel, instances: list[object]) -> list[Prediction]:
        started = time.perf_counter()
        predictions = model.predict(instances)
        self.metrics.inference_duration.observe(time.perf_counter() - started)
        return predictions


SERVER = web.AppKey("server", ModelServer)


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def parse_instances(body: bytes, max_batch: int) -> list[object]:
    """The ``instances`` list of a prediction request body, or BadRequestError saying why not."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadRequestError(f"request body is not valid JSON: {error}") from None
    if not isinstance(payload, dict):
        raise BadRequestError(
            f'request body must be a JSON object with an "instances" array, '
            f"got {json_type(payload)}"
        )
    if "instances" not in payload:
        raise BadRequestError('request body has no "instances" array')
    instances = payload["instances"]
    if not isinstance(instances, list):
        raise BadRequestError(f'"instances" must be an array, got {json_type(instances)}')
    if not instances:
        raise BadRequestError('"instances" is empty; send at least one instance')
    if len(instances) > max_batch:
        raise BadRequestError(
            f'"instances" has {len(instances)} items; this server takes at most {max_batch} '
            "per request"
        )
    return instances


async def predict(request: web.Request) -> web.Response:
    server = request.app[SERVER]
    metrics = server.metrics
    metrics.last_request.set_to_current_time()
    metrics.in_flight.inc()
    started = time.perf_counter()
    status = 500
    try:
        response = await _predict(request, server)
        status = response.status
        return response
    finally:
        metrics.in_flight.dec()
        metrics.requests.labels(code=str(status)).inc()
        metrics.request_duration.observe(time.perf_counter() - started)


async def _predict(request: web.Request, server: ModelServer) -> web.Response:
    model = server.model
    # While draining, a loaded model still answers: requests that reach a draining server were
    # routed before its endpoint was removed, and turning them away would fail them for nothing.
    if model is None:
        message = (
            "the model is still loading"
            if server.phase is Phase.LOADING
            else "the server is shutting down"
        )
        return error_response(
            503, f"{message}; retry shortly", {"Retry-After": str(RETRY_AFTER_SECONDS)}
        )
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return error_response(413, f"request body is larger than {server.max_request_bytes} bytes")
    try:
        instances = parse_instances(body, server.max_batch)
        predictions = await asyncio.get_running_loop().run_in_executor(
            server.executor, server.run_prediction, model, instances
        )
    except (BadRequestError, InvalidInstancesError) as error:
        return error_response(400, str(error))
    except Exception:
        logger.exception("prediction failed")
        return error_response(500, "prediction failed inside the server; see its log")
    server.metrics.batch_size.observe(len(instances))
    server.metrics.instances.inc(len(instances))
    return web.json_response({"predictions": predictions, "model": model.task})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    phase = request.app[SERVER].phase
    return web.json_response({"status": phase.value}, status=200 if phase is Phase.READY else 503)


async def metrics(request: web.Request) -> web.Response:
    body = request.app[SERVER].metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's own errors (unknown path, wrong method) as JSON too, and no traceback ever."""
    try:
        return await handler(request)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        headers = {"Allow": error.headers["Allow"]} if "Allow" in error.headers else None
        return error_response(
            error.status, f"{request.method} {request.path}: {error.reason}", headers
        )
    except Exception:
        logger.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, "internal server error; see the server log")


def build_app(server: ModelServer) -> web.Application:
    app = web.Application(middlewares=[json_errors], client_max_size=server.max_request_bytes)
    app[SERVER] = server
    app.router.add_post("/v1/predict", predict)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app
