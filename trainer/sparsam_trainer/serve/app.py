"""The HTTP application: routes, request validation, and the model's lifecycle phases.

Handlers never run the model on the event loop: decoding the JSON, checking the instances and
inference go to a single inference thread, so probes and metrics answer while a batch runs, and
requests queue in arrival order instead of competing for the same CPU cores.

Every error a client can cause is a JSON ``{"error": "..."}`` that says what to fix, logged as
one line (the shared middleware, `sparsam.httpserver.errors`); anything else is logged with its
traceback and answered with a generic 500, never a traceback. A client's request costs bounded
work whatever it sends: the body's size and rate (`sparsam.httpserver.body`), the length of a
number literal (Python's int() of a huge literal is quadratic), the JSON's nesting (the
decoder's recursion bound), the instances' count, shape and text length (`export`).
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Middleware

from sparsam.httpserver.body import BodyLimits, read_body
from sparsam.httpserver.errors import RequestError, error_response, json_errors
from sparsam_trainer.export import (
    FORMAT,
    MAX_TEXT_CHARS,
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
#: Longest number literal accepted, in characters: a float's repr needs 24; int() of a literal
#: of thousands of digits takes quadratic time (and past 4300 digits raises).
MAX_NUMBER_CHARS = 64
#: Content-Encodings aiohttp decodes (the decoded size counts against --max-request-bytes).
_ENCODINGS = frozenset({"identity", "gzip", "deflate"})


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
        max_text_chars: int = MAX_TEXT_CHARS,
    ) -> None:
        self.model_dir = model_dir
        self.max_batch = max_batch
        self.max_request_bytes = max_request_bytes
        self.max_text_chars = max_text_chars
        self.body_limits = BodyLimits(max_bytes=max_request_bytes)
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
        model = load_exported(self.model_dir, max_text_chars=self.max_text_chars)
        # The first call pays for lazy initialisation (allocator, kernels, tokenizer caches);
        # paying it here keeps it out of the first user's latency.
        model.predict([model.example_instance()])
        return model

    def drain(self) -> None:
        self.phase = Phase.DRAINING
        self.metrics.ready.set(0)

    def parse_and_predict(
        self, model: ExportedModel, body: bytes | bytearray
    ) -> tuple[int, list[Prediction]]:
        """The number of instances in `body` and their predictions; BadRequestError or
        InvalidInstancesError when the body is not a valid request."""
        instances = parse_instances(body, self.max_batch)
        return len(instances), self.run_prediction(model, instances)

    def run_prediction(self, model: ExportedModel, instances: list[object]) -> list[Prediction]:
        started = time.perf_counter()
        predictions = model.predict(instances)
        self.metrics.inference_duration.observe(time.perf_counter() - started)
        return predictions


SERVER = web.AppKey("server", ModelServer)


def _number(convert: Callable[[str], object]) -> Callable[[str], object]:
    def bounded(text: str) -> object:
        if len(text) > MAX_NUMBER_CHARS:
            raise BadRequestError(
                f"request body has a number of {len(text)} characters; at most "
                f"{MAX_NUMBER_CHARS} are accepted"
            )
        return convert(text)

    return bounded


def check_content(request: web.Request) -> None:
    """RequestError 415 unless the body says it is JSON (or says nothing), in UTF-8, in an
    encoding the server decodes."""
    declared = request.headers.get("Content-Type")
    if declared is not None:
        mime = request.content_type.lower()
        if mime != "application/json" and not (
            mime.startswith("application/") and mime.endswith("+json")
        ):
            raise RequestError(415, f"Content-Type {declared!r} is not JSON; send application/json")
        charset = (request.charset or "utf-8").lower()
        if charset not in ("utf-8", "utf8"):
            raise RequestError(415, f"charset {charset!r} is not accepted; send UTF-8")
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in _ENCODINGS:
        raise RequestError(
            415, f"Content-Encoding {encoding!r} is not accepted; send gzip, deflate or none"
        )


def parse_instances(body: bytes | bytearray, max_batch: int) -> list[object]:
    """The ``instances`` list of a prediction request body, or BadRequestError saying why not."""
    try:
        payload = json.loads(
            body,
            parse_int=_number(int),
            parse_float=_number(float),
        )
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadRequestError(f"request body is not valid JSON: {error}") from None
    except RecursionError:
        raise BadRequestError("request body is not valid JSON: it is nested too deeply") from None
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
    except RequestError as error:
        status = error.status
        raise
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
    check_content(request)
    body = await read_body(request, server.body_limits)
    try:
        count, predictions = await asyncio.get_running_loop().run_in_executor(
            server.executor, server.parse_and_predict, model, body
        )
    except (BadRequestError, InvalidInstancesError) as error:
        raise RequestError(400, str(error)) from None
    except Exception:
        logger.exception("prediction failed")
        return error_response(500, "prediction failed inside the server; see its log")
    server.metrics.batch_size.observe(count)
    server.metrics.instances.inc(count)
    return web.json_response({"predictions": predictions, "model": model.task})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    phase = request.app[SERVER].phase
    return web.json_response({"status": phase.value}, status=200 if phase is Phase.READY else 503)


async def metrics(request: web.Request) -> web.Response:
    body = request.app[SERVER].metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def build_app(server: ModelServer, middlewares: Sequence[Middleware] = ()) -> web.Application:
    """The application; `middlewares` run before the JSON error middleware (the server's
    connection guard)."""
    app = web.Application(
        middlewares=[
            *middlewares,
            json_errors(logger, "internal server error; see the server log"),
        ],
        client_max_size=server.max_request_bytes,
    )
    app[SERVER] = server
    app.router.add_post("/v1/predict", predict)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app
