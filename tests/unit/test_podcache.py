"""`kube.podcache`: which view a pod is in as it goes from created to bound, finished and
deleted; and what the list-and-watch loop does, on a scripted apiserver, when the watch's
version is too old, its connection breaks or the list is refused. The loop against the real
apiserver is `tests/integration/test_podcache_cluster.py`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, cast

from kubernetes.client import CoreV1Api
from kubernetes.client.exceptions import ApiException

from sparsam.api import constants as c
from sparsam.kube.podcache import PodCache, PodViews, pod_view


def pod(
    uid: str,
    node: str | None = None,
    phase: str = "Pending",
    namespace: str = "ml",
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"p-{uid}",
            "namespace": namespace,
            "uid": uid,
            "labels": labels or {},
            "managedFields": [{"manager": "kubectl"}],
        },
        "spec": {
            "nodeName": node,
            "containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}],
        },
        "status": {"phase": phase},
    }


def worker(uid: str, node: str | None = None, phase: str = "Pending") -> dict[str, Any]:
    return pod(uid, node, phase, labels={c.LABEL_JOB: "tj", c.LABEL_ROLE: c.ROLE_WORKER})


def names(pods: Any) -> list[str]:
    return sorted(p.name for p in pods)


def test_a_worker_moves_from_pending_to_its_node_and_leaves_when_it_ends() -> None:
    views = PodViews()
    views.apply("ADDED", worker("a"))
    assert names(views.pending()) == ["p-a"] and views.bound() == {}
    assert [p["metadata"]["uid"] for p in views.workers("ml", "tj")] == ["a"]

    views.apply("MODIFIED", worker("a", node="n1", phase="Running"))
    assert views.pending() == () and names(views.bound()["n1"]) == ["p-a"]
    assert views.workers("ml", "tj")[0]["status"] == {"phase": "Running"}

    # Finished: it holds no room on its node, but its job still reads it (its exit code).
    views.apply("MODIFIED", worker("a", node="n1", phase="Failed"))
    assert views.bound() == {} and views.workers("ml", "tj")[0]["status"]["phase"] == "Failed"

    views.apply("DELETED", worker("a", node="n1", phase="Failed"))
    assert views.workers("ml", "tj") == [] and len(views) == 0


def test_pods_are_kept_apart_by_namespace_and_label() -> None:
    views = PodViews()
    views.apply("ADDED", worker("a", node="n1", phase="Running"))
    views.apply("ADDED", pod("b", node="n1", phase="Running"))  # no label: the planner's only
    views.apply("ADDED", pod("c", namespace="other", labels={c.LABEL_JOB: "tj"}))
    views.apply("ADDED", pod("d", labels={c.LABEL_INFERENCE_SERVICE: "svc"}))
    assert names(views.bound()["n1"]) == ["p-a", "p-b"]
    assert [p["metadata"]["uid"] for p in views.workers("ml", "tj")] == ["a"]
    assert [p["metadata"]["uid"] for p in views.workers("other", "tj")] == ["c"]
    assert [p["metadata"]["uid"] for p in views.replicas("ml", "svc")] == ["d"]
    assert views.replicas("other", "svc") == []


def test_a_deleting_pod_is_no_longer_pending() -> None:
    views = PodViews()
    views.apply("ADDED", worker("a"))
    leaving = worker("a")
    leaving["metadata"]["deletionTimestamp"] = "2026-12-02T08:00:00Z"
    views.apply("MODIFIED", leaving)
    assert views.pending() == ()
    assert views.workers("ml", "tj")[0]["metadata"]["deletionTimestamp"]


def test_a_relist_replaces_every_view() -> None:
    views = PodViews()
    views.apply("ADDED", worker("gone", node="n1", phase="Running"))
    views.replace([worker("a", node="n2", phase="Running"), worker("b")])
    assert set(views.bound()) == {"n2"} and names(views.pending()) == ["p-b"]
    assert sorted(p["metadata"]["uid"] for p in views.workers("ml", "tj")) == ["a", "b"]
    views.apply("DELETED", worker("gone", node="n1", phase="Running"))  # unknown: no error
    assert len(views) == 2


def test_what_a_read_returned_does_not_change_with_later_events() -> None:
    views = PodViews()
    views.apply("ADDED", worker("a"))
    before = views.workers("ml", "tj")
    views.apply("MODIFIED", worker("a", node="n1", phase="Running"))
    assert before[0]["status"] == {"phase": "Pending"} and before[0]["spec"] == {"nodeName": None}


def test_a_pod_view_keeps_what_the_passes_read_only() -> None:
    view = pod_view(worker("a", node="n1", phase="Running"))
    assert set(view["metadata"]) == {"name", "namespace", "uid", "labels"}
    assert view["spec"] == {"nodeName": "n1"}


# --- the list and watch loop, on a scripted apiserver ------------------------------------------


class Stream:
    """A watch response: its lines, then (if given) a broken connection."""

    def __init__(self, events: list[dict[str, Any]], breaks: bool = False) -> None:
        self._events, self._breaks = events, breaks

    def stream(self, amt: Any = None, decode_content: Any = None) -> Iterator[bytes]:
        for event in self._events:
            yield (json.dumps(event) + "\n").encode()
        if self._breaks:
            raise ConnectionResetError("connection reset by peer")

    def close(self) -> None:
        pass


class Page:
    def __init__(self, pods: list[dict[str, Any]], version: str, more: str = "") -> None:
        meta = {"resourceVersion": version} | ({"continue": more} if more else {})
        self.data = json.dumps({"items": pods, "metadata": meta})


class ScriptedCore:
    """`list_pod_for_all_namespaces` answering from a script; when it runs out, the cache is
    stopped and the watch ends."""

    def __init__(self, script: list[Page | Stream | Exception]) -> None:
        self.script = script
        self.calls: list[str] = []
        self.cache: PodCache | None = None

    def list_pod_for_all_namespaces(self, **kwargs: Any) -> Page | Stream:
        if kwargs.get("watch"):
            self.calls.append(f"watch {kwargs['resource_version']}")
        else:
            self.calls.append(f"list {kwargs['_continue']}" if kwargs.get("_continue") else "list")
        if not self.script:
            assert self.cache is not None
            self.cache.stop()
            return Stream([])
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step


def event(kind: str, body: dict[str, Any], version: str) -> dict[str, Any]:
    body["metadata"]["resourceVersion"] = version
    return {"type": kind, "object": body}


def run_cache(script: list[Page | Stream | Exception]) -> tuple[PodCache, ScriptedCore]:
    core = ScriptedCore(script)
    cache = core.cache = PodCache(cast(CoreV1Api, core))
    cache.run()
    return cache, core


def uids(cache: PodCache) -> list[str]:
    return sorted(p["metadata"]["uid"] for p in cache.views.workers("ml", "tj"))


def test_a_list_of_several_pages_is_read_to_its_end_then_watched_from() -> None:
    cache, core = run_cache([Page([worker("a")], "7", more="t1"), Page([worker("b")], "9")])
    assert core.calls == ["list", "list t1", "watch 9"]
    assert uids(cache) == ["a", "b"]


def test_a_version_too_old_lists_again_and_replaces_the_views() -> None:
    cache, core = run_cache(
        [
            Page([worker("a")], "10"),
            Stream(
                [
                    event("ADDED", worker("b"), "11"),
                    {"type": "ERROR", "object": {"kind": "Status", "code": 410}},
                ]
            ),
            Page([worker("c")], "20"),
        ]
    )
    assert core.calls == ["list", "watch 10", "list", "watch 20"]
    assert uids(cache) == ["c"] and cache.synced.is_set()


def test_a_gone_answer_to_the_watch_request_lists_again() -> None:
    _, core = run_cache([Page([], "10"), ApiException(status=410, reason="Gone"), Page([], "30")])
    assert core.calls == ["list", "watch 10", "list", "watch 30"]


def test_a_broken_watch_resumes_from_the_last_version_seen_and_keeps_the_views() -> None:
    cache, core = run_cache(
        [
            Page([worker("a")], "10"),
            Stream([{"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "12"}}}]),
            Stream([event("ADDED", worker("b"), "13")], breaks=True),
            ApiException(status=500, reason="Internal Server Error"),
        ]
    )
    assert core.calls == ["list", "watch 10", "watch 12", "watch 13", "watch 13"]
    assert uids(cache) == ["a", "b"]


def test_no_list_leaves_the_cache_unsynced_and_it_tries_again() -> None:
    cache, core = run_cache([ApiException(status=403, reason="Forbidden")])
    assert core.calls[:2] == ["list", "list"] and not cache.synced.is_set()


def test_a_pod_waiting_on_a_missing_claim_is_not_the_planners() -> None:
    views = PodViews()
    stuck = worker("a")
    verdict = '0/2 nodes are available: persistentvolumeclaim "weights" not found.'
    stuck["status"]["conditions"] = [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": verdict}
    ]
    views.apply("ADDED", stuck)
    assert views.pending() == ()
    assert views.workers("ml", "tj")  # its owner still sees it
    short = worker("a")
    verdict = "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."
    short["status"]["conditions"] = [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": verdict}
    ]
    views.apply("MODIFIED", short)
    assert names(views.pending()) == ["p-a"]
