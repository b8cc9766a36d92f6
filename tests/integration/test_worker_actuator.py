"""The TrainingJob pass's calls (`kube.workers` over `kube.rest`, no typed models) against the
real apiserver: what they create is what the manifests say, and each refusal or race ends the
way the controller relies on."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.client import ApiClient
from tests.conftest import Cluster, Kubectl
from tests.operator_process import apply, get, trainingjob

from sparsam.api.trainingjob import TrainingJob
from sparsam.kube.client import api_client
from sparsam.kube.errors import ApiRefused
from sparsam.kube.trainingjob import service_manifest, worker_manifest
from sparsam.kube.workers import WorkerActuator


@pytest.fixture(scope="module")
def api(cluster: Cluster) -> Iterator[ApiClient]:
    client = api_client(cluster.kubeconfig)
    yield client
    client.close()


def _job(kubectl: Kubectl, namespace: str) -> TrainingJob:
    apply(kubectl, trainingjob("tj", namespace, "NVIDIA-T4"))
    body: dict[str, Any] = get(kubectl, "trainingjob", "tj", "-n", namespace)
    return TrainingJob.from_body(body)


def test_pods_services_and_status_are_written_and_races_end_as_the_pass_expects(
    api: ApiClient, kubectl: Kubectl, namespace: str
) -> None:
    actuator = WorkerActuator(api)
    job = _job(kubectl, namespace)

    actuator.apply_service(service_manifest(job))
    actuator.apply_service(service_manifest(job))  # applying again changes nothing
    service = get(kubectl, "service", "tj", "-n", namespace, "--show-managed-fields")
    assert service["spec"]["clusterIP"] == "None"
    managers = {entry["manager"] for entry in service["metadata"]["managedFields"]}
    assert managers == {"sparsam"}

    manifest = worker_manifest(job, 0)
    assert actuator.create_pod(manifest) is True
    assert actuator.create_pod(manifest) is False  # the name is taken: left alone
    pod = get(kubectl, "pod", manifest["metadata"]["name"], "-n", namespace)
    assert pod["metadata"]["labels"] == manifest["metadata"]["labels"]
    assert pod["metadata"]["ownerReferences"][0]["uid"] == job.metadata.uid

    actuator.write_status(namespace, "tj", {"preemptions": 2, "countedPods": ["a-uid"]})
    status = get(kubectl, "trainingjob", "tj", "-n", namespace)["status"]
    assert (status["preemptions"], status["countedPods"]) == (2, ["a-uid"])

    # Another pod's uid: the precondition fails (409), and nothing is deleted.
    actuator.delete_pod(namespace, manifest["metadata"]["name"], "not-its-uid")
    assert get(kubectl, "pod", manifest["metadata"]["name"], "-n", namespace)
    actuator.delete_pod(namespace, manifest["metadata"]["name"], pod["metadata"]["uid"], True)
    gone = kubectl("get", "pod", manifest["metadata"]["name"], "-n", namespace, check=False)
    assert "NotFound" in gone.stderr
    actuator.delete_pod(namespace, manifest["metadata"]["name"], pod["metadata"]["uid"])  # 404


def test_a_refusal_is_one_line_that_names_the_call_and_the_apiservers_reason(
    api: ApiClient, kubectl: Kubectl, namespace: str
) -> None:
    actuator = WorkerActuator(api)
    job = _job(kubectl, namespace)
    manifest = worker_manifest(job, 0)
    manifest["spec"]["containers"][0]["name"] = "Not_A_DNS_Label"

    with pytest.raises(ApiRefused) as refused:
        actuator.create_pod(manifest)

    message = str(refused.value)
    assert message.startswith(f"creating pod {namespace}/tj-worker-0: 422 Unprocessable Entity")
    assert "spec.containers[0].name" in message
    assert "\n" not in message

    with pytest.raises(ApiRefused, match=r"writing the status of trainingjob .*/nope: 404"):
        actuator.write_status(namespace, "nope", {"preemptions": 1})
