"""Where a service's traffic can go: the ready replicas of each InferenceService.

The activator asks one question per request, "which addresses of namespace/name are ready now?",
and while the answer is "none" it waits for the answer to change. `Backends` is that question
as a Protocol; `BackendTable` is the in-memory answer every implementation shares (and tests
program directly); `static_backends` fills one from ``--backend`` flags, and `KubeBackends`
(in `sparsam.activator.kube`) keeps one in step with the cluster's Pods and InferenceServices.

A BackendTable lives on the event loop's thread: it is read and changed there only, so a
request that found no ready replica and then waits for a change cannot miss one in between.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, Protocol

#: (namespace, name) of an InferenceService.
ServiceKey = tuple[str, str]

# The container port the model server listens on is the one named so (see kube/serving.py).
HTTP_PORT_NAME = "http"

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")


def valid_key(namespace: str, name: str) -> bool:
    """Whether `namespace` and `name` could name an InferenceService (RFC 1123 names)."""
    return bool(_DNS_LABEL.fullmatch(namespace) and _DNS_SUBDOMAIN.fullmatch(name))


class Backends(Protocol):
    """The services the activator knows, and the ready addresses ("host:port") of each."""

    def synced(self) -> bool:
        """False until the first full view has arrived; until then nothing is known."""
        ...

    def known(self, key: ServiceKey) -> bool:
        """Whether an InferenceService `key` exists (meaningful once synced)."""
        ...

    def services(self) -> Collection[ServiceKey]:
        """Every InferenceService known now."""
        ...

    def ready(self, key: ServiceKey) -> Sequence[str]:
        """The addresses of `key`'s ready replicas, in a stable order; empty when none is."""
        ...

    async def changed(self, key: ServiceKey) -> None:
        """Return at the next change of `key`'s ready addresses or existence (or of the sync
        state). Callers check `ready` first and then wait, with no await in between."""
        ...


class BackendTable:
    """The state behind every Backends: services, ready addresses, and waiters to wake."""

    def __init__(self) -> None:
        self._synced = False
        self._services: set[ServiceKey] = set()
        self._ready: dict[ServiceKey, tuple[str, ...]] = {}
        self._waiters: dict[ServiceKey, asyncio.Event] = {}

    # Backends
    def synced(self) -> bool:
        return self._synced

    def known(self, key: ServiceKey) -> bool:
        return key in self._services

    def services(self) -> Collection[ServiceKey]:
        return frozenset(self._services)

    def ready(self, key: ServiceKey) -> Sequence[str]:
        return self._ready.get(key, ())

    async def changed(self, key: ServiceKey) -> None:
        event = self._waiters.get(key)
        if event is None:
            event = self._waiters[key] = asyncio.Event()
        await event.wait()

    # Changes, on the loop's thread.
    def mark_synced(self) -> None:
        if not self._synced:
            self._synced = True
            self._notify(list(self._waiters))

    def set_services(self, keys: Iterable[ServiceKey]) -> None:
        new = set(keys)
        changed = new ^ self._services
        self._services = new
        self._notify(changed)

    def add_service(self, key: ServiceKey) -> None:
        if key not in self._services:
            self._services.add(key)
            self._notify([key])

    def remove_service(self, key: ServiceKey) -> None:
        if key in self._services:
            self._services.discard(key)
            self._notify([key])

    def set_ready(self, key: ServiceKey, addresses: Iterable[str]) -> None:
        ready = tuple(sorted(set(addresses)))
        if ready == self._ready.get(key, ()):
            return
        if ready:
            self._ready[key] = ready
        else:
            self._ready.pop(key, None)
        self._notify([key])

    def replace_ready(self, ready: Mapping[ServiceKey, Iterable[str]]) -> None:
        """Set every service's addresses at once (after a full list): those not named have
        none."""
        for key in set(self._ready) | set(ready):
            self.set_ready(key, ready.get(key, ()))

    def _notify(self, keys: Iterable[ServiceKey]) -> None:
        for key in keys:
            event = self._waiters.pop(key, None)
            if event is not None:
                event.set()


def parse_backend(text: str) -> tuple[ServiceKey, str]:
    """``NAMESPACE/NAME=HOST:PORT`` -> ((namespace, name), "host:port"); ValueError saying what
    is wrong otherwise."""
    service, sep, address = text.partition("=")
    namespace, slash, name = service.partition("/")
    host, colon, port = address.rpartition(":")
    if not (sep and slash and colon and host and valid_key(namespace, name)):
        raise ValueError(
            f"{text!r}: expected NAMESPACE/NAME=HOST:PORT with Kubernetes names, "
            "e.g. default/digits=127.0.0.1:8080"
        )
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")
    return (namespace, name), f"{host}:{int(port)}"


def static_backends(backends: Iterable[tuple[ServiceKey, str]]) -> BackendTable:
    """A table that never changes: each named service, with its addresses always ready.

    For running outside a cluster (benchmarks, tests): there is no readiness to watch, so a
    backend that does not listen yet is retried on connection errors until the hold timeout.
    """
    table = BackendTable()
    addresses: dict[ServiceKey, list[str]] = {}
    for key, address in backends:
        addresses.setdefault(key, []).append(address)
    table.set_services(addresses)
    table.replace_ready(addresses)
    table.mark_synced()
    return table


def pod_address(pod: Mapping[str, Any]) -> str | None:
    """``podIP:port`` of a pod that can take traffic now, else None.

    It can when it is Running, has an IP, its Ready condition is True and it is not being
    deleted; the port is its container port named ``http``. A terminating pod stays Ready for a
    while, but it is draining, so no new request goes there.
    """
    metadata = pod.get("metadata") or {}
    status = pod.get("status") or {}
    if metadata.get("deletionTimestamp") or status.get("phase") != "Running":
        return None
    ip = status.get("podIP")
    ready = any(
        condition.get("type") == "Ready" and condition.get("status") == "True"
        for condition in status.get("conditions") or ()
    )
    if not ip or not ready:
        return None
    for container in (pod.get("spec") or {}).get("containers") or ():
        for port in container.get("ports") or ():
            if port.get("name") == HTTP_PORT_NAME and port.get("containerPort"):
                host = f"[{ip}]" if ":" in ip else ip
                return f"{host}:{int(port['containerPort'])}"
    return None
