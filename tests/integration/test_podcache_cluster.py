"""`kube.podcache.PodCache` against the real apiserver: the first list, then the watch, keep
its views as pods are created, bound, and deleted. What it does when a watch breaks or its
version is too old is in `tests/unit/test_podcache.py`."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes.client import ApiClient, CoreV1Api
from tests.conftest import Cluster

from sparsam.api import constants as c
from sparsam.kube.client import api_client
from sparsam.kube.podcache import PodCache


@pytest.fixture(scope="module")
def api(cluster: Cluster) -> Iterator[ApiClient]:
    client = api_client(cluster.kubeconfig)
    yield client
    client.close()


def plain_pod(name: str, job: str, node_selector: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {c.LABEL_JOB: job}},
        "spec": {
            "nodeSelector": node_selector,
            "containers": [{"name": "c", "image": "busybox", "command": ["true"]}],
        },
    }


def until(what: str, check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_the_views_follow_pods_from_the_first_list_to_their_deletion(
    api: ApiClient, namespace: str
) -> None:
    core = CoreV1Api(api)
    # One pod before the cache starts (its list), one after (its watch); neither can be bound.
    nowhere = {"sparsam.test/nowhere": "true"}
    core.create_namespaced_pod(namespace, plain_pod("before", "tj", nowhere))
    cache = PodCache.connect(api)
    cache.start()
    try:
        assert cache.synced.wait(20)
        views = cache.views

        def workers() -> set[str]:
            return {p["metadata"]["name"] for p in views.workers(namespace, "tj")}

        assert workers() == {"before"}
        core.create_namespaced_pod(namespace, plain_pod("after", "tj", nowhere))
        until("the watched pod", lambda: workers() == {"before", "after"})
        pending = {(p.namespace, p.name) for p in views.pending()}
        assert {(namespace, "before"), (namespace, "after")} <= pending

        core.delete_namespaced_pod("before", namespace, grace_period_seconds=0)
        until("the deleted pod gone", lambda: workers() == {"after"})
    finally:
        cache.stop()
