"""The ClusterKopfPeering `sparsam run --peering NAME` joins, checked before Kopf starts.

Kopf, told to peer through an object that does not exist, waits paused and says nothing: an
operator that looks alive and acts on nothing. So a missing object stops `sparsam run` with
a sentence saying what to create.
"""

from __future__ import annotations

from kubernetes.client import ApiClient, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from sparsam.kube.errors import ApiRefused, refused

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
