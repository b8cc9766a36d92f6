"""The ClusterKopfPeering `sparsam run --peering NAME` joins, checked before Kopf starts.

Kopf, told to peer through an object that does not exist, waits paused and says nothing: an
operator that looks alive and acts on nothing. So a missing object stops `sparsam run` with
a sentence saying what to create.

While it runs, `PeeringGate` tells the passes from the work queues (`handlers.passes`), which
run outside Kopf's handlers, whether Kopf's peering rule lets this replica act.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import os
import secrets
import socket
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes.client import ApiClient, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from sparsam.decisions.peering import announced, may_act
from sparsam.kube.errors import ApiRefused, refused

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "kopf.dev", "v1", "clusterkopfpeerings"


def require_peering(api: ApiClient, name: str) -> None:
    """Raise ApiRefused unless the ClusterKopfPeering `name` exists."""
    try:
        CustomObjectsApi(api).get_cluster_custom_object(GROUP, VERSION, PLURAL, name)
    except ApiException as exc:
        if exc.status == 404:
            raise ApiRefused(
                f"--peering {name}: there is no ClusterKopfPeering {name!r} (or no {PLURAL} "
                f"CRD): create it (kubectl apply -f a ClusterKopfPeering named {name}), or "
                "install the chart with operator.peering.enabled=true"
            ) from exc
        raise refused(f"reading clusterkopfpeering {name}", exc) from exc


class PeeringGate:
    """Whether this replica may act now (`decisions.peering.may_act`), from the peering
    object read every `every` seconds (`watch`, a task). Closed until the first read, as Kopf
    starts paused; a failed read keeps the last answer.

    A replica that joins opens only once its own entry (Kopf writes it as it starts) has been
    in the object for `hold` seconds (`decisions.peering.announced`): two of the other
    replicas' reads, every `every` seconds, and a pass in flight."""

    def __init__(
        self,
        api: ApiClient,
        name: str,
        identity: str,
        priority: int,
        every: float = 2.0,
        hold: float = 4.0,
    ) -> None:
        self._api = CustomObjectsApi(api)
        self._name = name
        self.identity = identity
        self._priority = priority
        self._every = every
        self._hold = timedelta(seconds=hold)
        #: When this replica's own entry was first seen in the object (None: not yet).
        self._listed: datetime | None = None
        self._open = False

    def __call__(self) -> bool:
        return self._open

    def read(self) -> None:
        try:
            body = self._api.get_cluster_custom_object(GROUP, VERSION, PLURAL, self._name)
        except ApiException as exc:
            log.warning("reading clusterkopfpeering %s: %s", self._name, exc.reason)
            return
        peers = (body.get("status") if isinstance(body, dict) else None) or {}
        self.update(peers, datetime.now(UTC))

    def update(self, peers: Mapping[str, Any], now: datetime) -> None:
        """Open or close on the peering object's status `peers`, read at `now`."""
        self._listed = (self._listed or now) if self.identity in peers else None
        was = self._open
        self._open = announced(self._listed, now, self._hold) and may_act(
            peers, self.identity, self._priority, now
        )
        if self._open != was:
            state = "resumed" if self._open else "paused"
            log.info("the work queues' passes %s (clusterkopfpeering %s)", state, self._name)

    async def watch(self) -> None:
        while True:
            await asyncio.to_thread(self.read)
            await asyncio.sleep(self._every)


def own_identity() -> str:
    """This replica's name among its peers: its pod's name (the chart sets POD_ID, as Kopf
    reads it), else user@host with the time and a random tail, as Kopf would make it."""
    pod = os.environ.get("POD_ID")
    if pod:
        return pod
    moment = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    return f"{getpass.getuser()}@{socket.gethostname()}/{moment}/{secrets.token_hex(2)}"
