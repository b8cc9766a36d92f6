"""Every pod of the cluster as the controllers read them, kept by a list and a watch of our own.

Not Kopf indexes. A pod changes three or four times on its way to Running (created, bound,
started), and Kopf's machinery for each event (a cause built, the handlers of three indexes
matched and invoked, each in its own context) cost the operator more CPU than all of its
passes together while TrainingJobs came in a burst (`benchmarks/operator_scale.py`). That CPU
is taken from the apiserver that has to create the pods. Here an event is one `json.loads` and
a few dictionary writes, in a thread of its own.

`PodViews` holds three views, each keyed by pod uid within its key:
- by node: the pods that hold room on a node, as the capacity planner sees them
  (`decisions.cluster.Pod`), and under `PENDING` those waiting for one;
- a TrainingJob's pods (label `sparsam.dev/job`) and an InferenceService's (its label), as their
  passes read them (`pod_view`): not managedFields, containers and the like, which make up
  most of a pod's size.

`PodCache` keeps them: a paginated list, then a watch from its resourceVersion that resumes
from the last one seen (bookmarks included) when the stream ends or breaks. A 410 Gone (the
version is too old) lists again and replaces the views at once. `synced` is set once the first
list is in: the operator starts Kopf only then (`sparsam.main`), as Kopf starts no handler
before its own indexes have listed.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final

from kubernetes.client import ApiClient, CoreV1Api
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from sparsam.api import constants as c
from sparsam.decisions.cluster import Pod
from sparsam.decisions.waiting import waits_for_capacity
from sparsam.kube.observe import Body, holds_room, is_pending, pod_from_body, scheduled

log = logging.getLogger(__name__)

#: Key of the by-node view for pending pods; bound pods are under their node's name.
PENDING: Final = ("pending",)
#: Pods a list page holds.
PAGE: Final = 500
#: A watch request lasts this long (the server ends it), then resumes from its last version.
WATCH_SECONDS: Final = 300
#: Waits after a failed list or watch: doubling from the first to the last.
RETRY_FIRST_S: Final = 0.5
RETRY_LAST_S: Final = 30.0

Key = tuple[str, str]  # namespace, a job's or a service's name


def pod_view(body: Body) -> dict[str, Any]:
    """What the TrainingJob and InferenceService passes read of a pod: who it is, where it
    runs, and its status."""
    metadata: Body = body.get("metadata") or {}
    keep = (
        "name",
        "namespace",
        "uid",
        "labels",
        "annotations",
        "creationTimestamp",
        "deletionTimestamp",
    )
    return {
        "metadata": {key: metadata[key] for key in keep if key in metadata},
        "spec": {"nodeName": (body.get("spec") or {}).get("nodeName")},
        "status": dict(body.get("status") or {}),
    }


class PodViews:
    """The three views, updated by `apply` and `replace` and read by the passes, from any
    thread: each call holds the lock, and what a read returns is not changed afterwards (an
    update replaces a pod's entry, it never edits it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, tuple[Any, Key | None, Key | None]] = {}
        self._by_node: dict[Any, dict[str, Pod]] = {}
        self._by_job: dict[Key, dict[str, dict[str, Any]]] = {}
        self._by_service: dict[Key, dict[str, dict[str, Any]]] = {}

    def apply(self, kind: str, body: Body) -> None:
        """One watch event: ADDED, MODIFIED or DELETED."""
        uid = str((body.get("metadata") or {}).get("uid", ""))
        with self._lock:
            self._remove(uid)
            if kind != "DELETED":
                self._add(uid, body)

    def replace(self, bodies: Iterable[Body]) -> None:
        """Every pod there is, from a list: the views are replaced at once."""
        fresh = PodViews()
        for body in bodies:
            fresh.apply("ADDED", body)
        with self._lock:
            self._keys, self._by_node = fresh._keys, fresh._by_node
            self._by_job, self._by_service = fresh._by_job, fresh._by_service

    def _remove(self, uid: str) -> None:
        keys = self._keys.pop(uid, None)
        if keys is None:
            return
        views: tuple[dict[Any, dict[str, Any]], ...] = (
            self._by_node,
            self._by_job,
            self._by_service,
        )
        for view, key in zip(views, keys, strict=True):
            entries = view.get(key) if key is not None else None
            if entries is not None:
                entries.pop(uid, None)
                if not entries:
                    del view[key]

    def _add(self, uid: str, body: Body) -> None:
        metadata: Body = body.get("metadata") or {}
        namespace = str(metadata.get("namespace", ""))
        labels: Mapping[str, str] = metadata.get("labels") or {}
        node = (body.get("spec") or {}).get("nodeName")
        place: Any = None
        if node and holds_room(body):
            place = node
        elif not node and is_pending(body) and waits_for_capacity(scheduled(body)):
            # Only a pod a node could let run is the planner's: one the scheduler holds back
            # for its own reasons (a claim that does not exist) would get a node left empty.
            place = PENDING
        if place is not None:
            self._by_node.setdefault(place, {})[uid] = pod_from_body(body)
        job = (namespace, labels[c.LABEL_JOB]) if c.LABEL_JOB in labels else None
        service = (
            (namespace, labels[c.LABEL_INFERENCE_SERVICE])
            if c.LABEL_INFERENCE_SERVICE in labels
            else None
        )
        if job is not None or service is not None:
            view = pod_view(body)
            if job is not None:
                self._by_job.setdefault(job, {})[uid] = view
            if service is not None:
                self._by_service.setdefault(service, {})[uid] = view
        self._keys[uid] = (place, job, service)

    # Reads.

    def bound(self) -> dict[str, tuple[Pod, ...]]:
        """The pods that hold room on each node, by node name."""
        with self._lock:
            return {k: tuple(v.values()) for k, v in self._by_node.items() if k != PENDING}

    def pending(self) -> tuple[Pod, ...]:
        with self._lock:
            return tuple(self._by_node.get(PENDING, {}).values())

    def workers(self, namespace: str, job: str) -> list[dict[str, Any]]:
        """A TrainingJob's pods: its workers, and its compress pod once there is one."""
        with self._lock:
            return list(self._by_job.get((namespace, job), {}).values())

    def replicas(self, namespace: str, service: str) -> list[dict[str, Any]]:
        """The model-server pods of an InferenceService."""
        with self._lock:
            return list(self._by_service.get((namespace, service), {}).values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._keys)


class Gone(Exception):
    """The watch's resourceVersion is too old (410): list again."""


class PodCache:
    """Keeps `views` with a list and a watch of every pod, in a daemon thread (`start`)."""

    def __init__(self, core: CoreV1Api, views: PodViews | None = None) -> None:
        self._core = core
        self.views = views or PodViews()
        self.synced = threading.Event()
        #: The resourceVersion to watch from; None: list first.
        self._version: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.run, name="sparsam-pods", daemon=True)

    @classmethod
    def connect(cls, api: ApiClient) -> PodCache:
        """A cache on a client of its own: the watch holds a connection for minutes."""
        return cls(CoreV1Api(ApiClient(api.configuration)))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop at the next event or the end of the watch request, whichever comes first."""
        self._stop.set()

    def run(self) -> None:
        """List, then watch, until stopped (`start` runs this in its thread)."""
        delay = RETRY_FIRST_S
        while not self._stop.is_set():
            try:
                if self._version is None:
                    self._list()
                self._watch()
                delay = RETRY_FIRST_S
            except Gone:
                log.info("pod watch: version %s is too old, listing again", self._version)
                self._version = None
            except Exception as exc:  # the apiserver away or restarting: retry, keep the views
                log.warning("pod %s failed: %s; again in %.1fs", self._doing(), exc, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, RETRY_LAST_S)

    def _doing(self) -> str:
        return "list" if self._version is None else f"watch from {self._version}"

    def _list(self) -> None:
        started = time.monotonic()
        end: dict[str, str] = {}

        def pages() -> Iterator[Body]:
            """Every pod, a page at a time (a page's bodies go once its views are made)."""
            token: str | None = None
            while True:
                response: Any = self._core.list_pod_for_all_namespaces(
                    limit=PAGE, _continue=token, _preload_content=False
                )
                page = json.loads(response.data)
                yield from page.get("items") or ()
                meta = page.get("metadata") or {}
                token = meta.get("continue") or None
                if token is None:
                    end["version"] = str(meta.get("resourceVersion", ""))
                    return

        self.views.replace(pages())
        self._version = end["version"]
        self.synced.set()
        log.info("pods listed: %d in %.1fs", len(self.views), time.monotonic() - started)

    def _watch(self) -> None:
        """Apply the events of one watch request, from `_version`, which follows them (so that
        a broken stream resumes where it broke)."""
        try:
            response: Any = self._core.list_pod_for_all_namespaces(
                watch=True,
                allow_watch_bookmarks=True,
                resource_version=self._version,
                timeout_seconds=WATCH_SECONDS,
                _preload_content=False,
                _request_timeout=(10, WATCH_SECONDS + 30),
            )
        except ApiException as exc:
            if exc.status == 410:
                raise Gone() from exc
            raise
        try:
            for line in iter_resp_lines(response):  # type: ignore[no-untyped-call]
                if self._stop.is_set():
                    break
                if not line:
                    continue
                event = json.loads(line)
                kind, body = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if body.get("code") == 410:
                        raise Gone()
                    raise RuntimeError(f"watch error: {body.get('message')}")
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self.views.apply(kind, body)
                self._version = (body.get("metadata") or {}).get("resourceVersion") or self._version
        finally:
            response.close()  # an unread rest of the stream must not go back to the pool
