"""After training: the compress-then-deploy decision, table-driven."""

from __future__ import annotations

from typing import Any

import pytest

from sparsam.api.trainingjob import TrainingJob
from sparsam.decisions.delivery import CompressPod, decide_delivery, delivers, model_uri

REPORT = (
    '{"compression":{"sizeBytes":{"before":100,"after":25},"accuracy":{"before":0.9,'
    '"after":0.8},"accepted":false},"reason":"accuracy fell 0.1 > 0.02"}'
)


def job(**spec: Any) -> TrainingJob:
    base: dict[str, Any] = {
        "image": "t:1",
        "workers": {"min": 1, "max": 1},
        "checkpoint": {"volumeClaim": "ckpt"},
        "compression": {"quantization": {}},
        "deploy": {"inferenceService": "clf"},
    }
    base.update(spec)
    return TrainingJob.from_body(
        {
            "metadata": {"name": "tj", "namespace": "ml"},
            "spec": {k: v for k, v in base.items() if v is not None},
        }
    )


@pytest.mark.parametrize(
    ("spec", "pod", "phase", "create", "deploy", "condition"),
    [
        pytest.param({}, None, "Compressing", True, False, None, id="start-compressing"),
        pytest.param({}, CompressPod("Pending"), "Compressing", False, False, None, id="pending"),
        pytest.param({}, CompressPod("Running"), "Compressing", False, False, None, id="running"),
        pytest.param(
            {}, CompressPod("Succeeded", 0, "{}"), "Succeeded", False, True,
            ("Deployed", "True"), id="accepted-deployed",
        ),
        pytest.param(
            {"deploy": None}, CompressPod("Succeeded", 0, ""), "Succeeded", False, False,
            ("CompressionRejected", "False"), id="accepted-no-deploy",
        ),
        pytest.param(
            {}, CompressPod("Failed", 76, REPORT), "Succeeded", False, False,
            ("CompressionRejected", "True"), id="rejected",
        ),
        pytest.param(
            {}, CompressPod("Failed", 137, "OOMKilled"), "Failed", False, False, None,
            id="failed",
        ),
        pytest.param(
            {"compression": None}, None, "Deploying", True, False, None,
            id="deploy-without-compression-exports",
        ),
        pytest.param(
            {"compression": None}, CompressPod("Running"), "Deploying", False, False, None,
            id="deploy-without-compression-exporting",
        ),
        pytest.param(
            {"compression": None}, CompressPod("Succeeded", 0, "{}"), "Succeeded", False, True,
            ("Deployed", "True"), id="deploy-without-compression-deployed",
        ),
        pytest.param(
            {"checkpoint": None}, None, "Succeeded", False, False,
            ("Deployed", "False"), id="compression-without-checkpoint",
        ),
    ],
)  # fmt: skip
def test_decide_delivery(
    spec: dict[str, Any],
    pod: CompressPod | None,
    phase: str,
    create: bool,
    deploy: bool,
    condition: tuple[str, str] | None,
) -> None:
    decision = decide_delivery(job(**spec), pod)
    assert decision.phase == phase
    assert decision.create_pod is create
    assert (decision.deploy_uri is not None) is deploy
    assert decision.finished is (phase not in ("Compressing", "Deploying"))
    if condition is not None:
        found = {c.type: c.status for c in decision.conditions}
        assert found[condition[0]] == condition[1]


def test_a_rejection_carries_its_figures_and_reason() -> None:
    decision = decide_delivery(job(), CompressPod("Failed", 76, REPORT))
    (rejected,) = decision.conditions
    assert "accuracy fell 0.1 > 0.02" in rejected.message
    assert "accuracy 0.9 -> 0.8" in rejected.message and "size 100 -> 25 bytes" in rejected.message
    assert decision.compression is not None and decision.compression["accepted"] is False
    assert decision.events[0][:2] == ("Warning", "CompressionRejected")


def test_a_failure_says_what_the_pod_said_and_a_garbled_message_is_not_a_crash() -> None:
    failed = decide_delivery(job(), CompressPod("Failed", 2, "error: --model /x: no such file"))
    assert failed.ready == (
        "False",
        "CompressionFailed",
        "the compress pod exited 2: error: --model /x: no such file",
    )
    garbled = decide_delivery(job(), CompressPod("Succeeded", 0, "{not json"))
    assert garbled.phase == "Succeeded" and garbled.compression is None


def test_model_uri_and_delivers() -> None:
    assert model_uri(job()) == "pvc://ckpt/tj/compressed/model"
    assert model_uri(job(checkpoint=None)) is None
    assert delivers(job()) and not delivers(job(compression=None, deploy=None))


def test_a_model_deployed_as_trained_is_said_so_and_has_no_compression_status() -> None:
    plain = job(compression=None)
    decision = decide_delivery(
        plain, CompressPod("Succeeded", 0, '{"compression":{"accepted":true}}')
    )
    assert decision.deploy_uri == model_uri(plain) == "pvc://ckpt/tj/exported/model"
    assert decision.compression is None
    (deployed,) = decision.conditions  # no CompressionRejected: nothing was compressed
    assert deployed.type == "Deployed" and "no spec.compression" in deployed.message
