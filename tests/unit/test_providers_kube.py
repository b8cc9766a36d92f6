"""API failures as the providers' typed errors, and the one API client factory."""

from __future__ import annotations

from pathlib import Path

import pytest
import urllib3
import yaml
from kubernetes.client.exceptions import ApiException

from sparsam.kube.client import api_client
from sparsam.providers._kube import api_errors, translate
from sparsam.providers.nodepool import NotFound, ProviderError, Transient


@pytest.mark.parametrize(
    ("status", "error"),
    [
        pytest.param(404, NotFound, id="404-not-found"),
        pytest.param(409, Transient, id="409-conflict"),
        pytest.param(429, Transient, id="429-throttled"),
        pytest.param(500, Transient, id="500"),
        pytest.param(503, Transient, id="503"),
        pytest.param(0, Transient, id="no-status"),
        pytest.param(403, ProviderError, id="403-forbidden-is-permanent"),
        pytest.param(422, ProviderError, id="422-invalid-is-permanent"),
    ],
)
def test_translate(status: int, error: type[ProviderError]) -> None:
    got = translate(ApiException(status=status, reason="Why"), "p", "doing it")
    assert type(got) is error
    assert str(got).startswith("pool p: doing it")


def test_connection_errors_are_transient() -> None:
    with pytest.raises(Transient, match="pool p: listing"), api_errors("p", "listing"):
        raise urllib3.exceptions.MaxRetryError(None, "/api", "refused")  # type: ignore[arg-type]


def test_api_client_from_a_kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    first = api_client(kubeconfig)
    second = api_client(kubeconfig)
    assert first.configuration.host == "https://127.0.0.1:6443"
    assert first is not second  # no shared global client
