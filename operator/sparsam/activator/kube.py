"""The real Backends: Pods and InferenceServices, listed and watched cluster-wide.

Two background threads (the `kubernetes` client blocks) each list, then watch from the list's
resourceVersion, and start over with a fresh list when the watch expires (410 Gone) or fails;
they hand every change to the event loop with ``call_soon_threadsafe``, and the BackendTable is
only ever touched there. Until both first lists have arrived the view is not synced: requests
wait (nothing is "not found" yet) and ``/-/readyz`` answers 503.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from kubernetes import watch
from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from sparsam.activator.backends import BackendTable, ServiceKey, pod_address
from sparsam.api import constants as c

logger = logging.getLogger(__name__)

# A watch is re-opened this often even when nothing happens, so a silently dead connection
# cannot stall the view for long.
_WATCH_SECONDS = 60
_RETRY_SECONDS = 1.0

Body = Mapping[str, Any]


def _key(body: Body) -> ServiceKey:
    metadata = body.get("metadata") or {}
    return str(metadata.get("namespace", "")), str(metadata.get("name", ""))


class KubeBackends:
    """Backends kept in step with the cluster. `start` on the event loop, `stop` on the way
    out."""

    def __init__(self, api: ApiClient) -> None:
        self.table = BackendTable()
        self._core = CoreV1Api(api)
        self._custom = CustomObjectsApi(api)
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        # On the loop's thread only: pod uid -> (its service, its address when ready).
        self._pods: dict[str, tuple[ServiceKey, str | None]] = {}
        self._listed: set[str] = set()

    # Backends, answered by the table.
    def synced(self) -> bool:
        return self.table.synced()

    def known(self, key: ServiceKey) -> bool:
        return self.table.known(key)

    def services(self) -> Collection[ServiceKey]:
        return self.table.services()

    def ready(self, key: ServiceKey) -> Sequence[str]:
        return self.table.ready(key)

    async def changed(self, key: ServiceKey) -> None:
        await self.table.changed(key)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        pods = {"label_selector": c.LABEL_INFERENCE_SERVICE}
        services = {
            "group": c.GROUP,
            "version": c.VERSION,
            "plural": c.INFERENCE_SERVICE.plural,
        }
        for name, list_call, kwargs, on_list, on_event in (
            ("pods", self._core.list_pod_for_all_namespaces, pods, self._pods_listed, self._pod),
            (
                "inferenceservices",
                self._custom.list_cluster_custom_object,
                services,
                self._services_listed,
                self._service,
            ),
        ):
            thread = threading.Thread(
                target=self._watch_forever,
                args=(name, list_call, kwargs, on_list, on_event),
                name=f"watch-{name}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Ask the watch threads to end; they are daemons, so a watch that is waiting for its
        next event does not hold the process."""
        self._stopping.set()

    # The threads.
    def _watch_forever(
        self,
        what: str,
        list_call: Callable[..., Any],
        kwargs: dict[str, str],
        on_list: Callable[[list[Body]], None],
        on_event: Callable[[str, Body], None],
    ) -> None:
        while not self._stopping.is_set():
            try:
                response = list_call(**kwargs, _preload_content=False, _request_timeout=30)
                listed = json.loads(response.data)
                self._to_loop(on_list, listed.get("items") or [])
                version = listed["metadata"]["resourceVersion"]
                while not self._stopping.is_set():
                    version = self._watch_once(list_call, kwargs, version, on_event)
            except ApiException as error:
                if error.status != 410:
                    logger.warning(
                        "watching %s: %s %s; listing again", what, error.status, error.reason
                    )
                    self._stopping.wait(_RETRY_SECONDS)
            except Exception as error:
                logger.warning("watching %s: %s; listing again", what, error)
                self._stopping.wait(_RETRY_SECONDS)

    def _watch_once(
        self,
        list_call: Callable[..., Any],
        kwargs: dict[str, str],
        version: str,
        on_event: Callable[[str, Body], None],
    ) -> str:
        stream = watch.Watch()  # type: ignore[no-untyped-call]
        for event in stream.stream(  # type: ignore[no-untyped-call]
            list_call,
            **kwargs,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=_WATCH_SECONDS,
            _request_timeout=_WATCH_SECONDS + 10,
        ):
            body = event["raw_object"]
            version = str((body.get("metadata") or {}).get("resourceVersion") or version)
            if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                self._to_loop(on_event, event["type"], body)
            if self._stopping.is_set():
                stream.stop()  # type: ignore[no-untyped-call]
        return version

    def _to_loop(self, callback: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop is closed: the process is on its way out
            self._stopping.set()

    # On the loop.
    def _pods_listed(self, items: list[Body]) -> None:
        self._pods = {}
        for body in items:
            uid = str((body.get("metadata") or {}).get("uid"))
            self._pods[uid] = self._pod_entry(body)
        ready: dict[ServiceKey, list[str]] = {}
        for key, address in self._pods.values():
            if address is not None:
                ready.setdefault(key, []).append(address)
        self.table.replace_ready(ready)
        self._listed_one("pods")

    def _pod(self, kind: str, body: Body) -> None:
        uid = str((body.get("metadata") or {}).get("uid"))
        before = self._pods.pop(uid, None)
        if kind != "DELETED":
            self._pods[uid] = self._pod_entry(body)
        for key in {entry[0] for entry in (before, self._pods.get(uid)) if entry is not None}:
            self.table.set_ready(
                key, [a for k, a in self._pods.values() if k == key and a is not None]
            )

    @staticmethod
    def _pod_entry(body: Body) -> tuple[ServiceKey, str | None]:
        metadata = body.get("metadata") or {}
        service = str((metadata.get("labels") or {}).get(c.LABEL_INFERENCE_SERVICE, ""))
        return (str(metadata.get("namespace", "")), service), pod_address(body)

    def _services_listed(self, items: list[Body]) -> None:
        self.table.set_services(_key(body) for body in items)
        self._listed_one("inferenceservices")

    def _service(self, kind: str, body: Body) -> None:
        if kind == "DELETED":
            self.table.remove_service(_key(body))
        else:
            self.table.add_service(_key(body))

    def _listed_one(self, what: str) -> None:
        if what not in self._listed:
            self._listed.add(what)
            logger.info("listed %s", what)
        if len(self._listed) == 2:
            self.table.mark_synced()
