"""Writing what a pass found into the status of one of our objects."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from sparsam.api import constants as c
from sparsam.kube.errors import refused
from sparsam.kube.rest import MERGE_PATCH, Rest, path


class StatusWriter:
    """Merges status fields into the objects of one of our kinds: a merge PATCH of the status
    subresource, as field manager `sparsam`. Sync (a pass runs it in a thread); a refusal
    raises ApiRefused."""

    def __init__(self, api: ApiClient, resource: c.Resource) -> None:
        self._rest = Rest(api)
        self._resource = resource

    def __call__(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        kind = self._resource
        scope = ("namespaces", namespace) if kind.namespaced else ()
        try:
            self._rest.call(
                "PATCH",
                path("apis", c.GROUP, c.VERSION, *scope, kind.plural, name, "status"),
                {"status": status},
                query={"fieldManager": c.FIELD_MANAGER},
                content_type=MERGE_PATCH,
            )
        except ApiException as exc:
            where = f"{namespace}/{name}" if kind.namespaced else name
            raise refused(f"writing the status of {kind.singular} {where}", exc) from exc
