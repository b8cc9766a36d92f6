"""JSON calls to the apiserver with the ApiClient's connection pool and credentials, but none
of its typed models.

For the calls a TrainingJob pass makes per worker. The typed API (`CoreV1Api` and the like)
validates every argument with pydantic, walks the body to "sanitize" it, and turns each
response into model objects. For a pod created from a dict and a response nobody reads, that
was most of the operator's CPU per pod under load (a py-spy profile of
`benchmarks/operator_scale.py`: `create_namespaced_pod` held the GIL for 15 % of the run, the
HTTP exchange itself for a fifth of that).

Failures raise the typed client's `ApiException` (by status: `NotFoundException` and so on),
so callers handle them the one way they handle every other API error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import quote

from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

JSON: Final = "application/json"
MERGE_PATCH: Final = "application/merge-patch+json"
APPLY_PATCH: Final = "application/apply-patch+yaml"


def path(*segments: str) -> str:
    """`/`-joined, each segment quoted (names are DNS labels, but a path is no place to trust)."""
    return "/" + "/".join(quote(segment, safe="") for segment in segments)


class Rest:
    """Sync; callers run it in a thread, like the typed client."""

    def __init__(self, api: ApiClient) -> None:
        self._api = api

    def call(
        self,
        method: str,
        resource_path: str,
        body: Mapping[str, Any] | None = None,
        *,
        query: Mapping[str, str] | None = None,
        content_type: str = JSON,
    ) -> None:
        """`method` on `resource_path` (under the API server's host) with `body` as JSON.
        The response is never parsed, except a failure's (for its message)."""
        method, url, headers, _, _ = self._api.param_serialize(
            method,
            resource_path,
            query_params=list((query or {}).items()),
            header_params={"Content-Type": content_type, "Accept": JSON},
            auth_settings=["BearerToken"],
        )
        # The REST layer writes a JSON (or YAML) body as JSON itself.
        response = self._api.rest_client.request(  # type: ignore[no-untyped-call]
            method, url, headers=headers, body=body
        )
        data = response.read()
        if not 200 <= response.status <= 299:
            raise ApiException.from_response(
                http_resp=response, body=data.decode("utf-8", "replace"), data=None
            )
