"""The one place an API client is made: from a kubeconfig file, or from inside the cluster.

Sync on purpose: the official `kubernetes` client, whose calls Kopf runs in its thread pool. No
module-level client and no global configuration: `kubernetes.config.load_*` would set the
library's default, which every other ApiClient in the process would then share.
"""

from __future__ import annotations

import os
from pathlib import Path

from kubernetes import client, config

#: Threads the operator runs its passes in (`sparsam.main`), and threads a pass hands the
#: calls it makes at once to (`controllers.training`). In a burst of new TrainingJobs the jobs
#: wait for a free pass (a pass takes about a second on a saturated apiserver), so 64 passes
#: run at once rather than 32. Their calls do not fit 64 threads: with too few, a create
#: waits longer for a thread than for the apiserver; with 96, the apiserver is the limit.
PASS_THREADS = 64
CALL_THREADS = 96
#: Connections kept open to the apiserver, one per thread that calls it: beyond the pool's size
#: urllib3 opens a connection per call and throws it away (its default is 5 per CPU).
CONNECTIONS = PASS_THREADS + CALL_THREADS


def api_client(kubeconfig: Path | None = None, context: str | None = None) -> client.ApiClient:
    """An ApiClient for `kubeconfig` (and `context`), else the in-cluster service account when
    running in a pod, else the kubeconfig kubectl would use ($KUBECONFIG or ~/.kube/config)."""
    configuration = client.Configuration()
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig) if kubeconfig is not None else None,
            context=context,
            client_configuration=configuration,
        )
    configuration.connection_pool_maxsize = CONNECTIONS
    return client.ApiClient(configuration)
