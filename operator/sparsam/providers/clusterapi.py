"""The Cluster API node pool provider: a pool is one MachineDeployment (`cluster.x-k8s.io/v1beta1`).

- Size: the MachineDeployment's `spec.replicas`, read and written through its scale subresource
  (`.../machinedeployments/{name}/scale`), the write carrying the read's resourceVersion, so a
  concurrent writer makes it fail with 409 (Transient) instead of being overwritten.
- Capacity annotations: on every scale_up (and whenever the controller calls
  `apply_capacity_annotations`), the pool's node template is written to the MachineDeployment as
  the Cluster API autoscaler's scale-from-zero annotations (`capacity_annotations`, pure), with
  server-side apply as field manager `sparsam` (forced: the pool is their source of truth). An
  annotation the template no longer implies is dropped by the apply itself.
- Deleting one node: its Machine (the MachineDeployment's Machine whose `status.nodeRef.name` is
  the node) gets `cluster.x-k8s.io/delete-machine`, then the size drops by one; Cluster API's
  MachineSet deletes annotated Machines first. If the Machine already carries the annotation
  the size is not dropped again (a retry must not remove two nodes). A crash between the two
  steps leaves a marked Machine and the old size: the next scale-down removes that Machine first.

What this provider does NOT do: it never raises InsufficientCapacity (Cluster API does not say
so at scale time; the planner's provisioning timeout sees machines that never become nodes), and
it does not edit the MachineDeployment's template. Cluster API propagates to Nodes only labels in
its own domains (node-role.kubernetes.io, node-restriction.kubernetes.io, node.cluster.x-k8s.io),
so the pool's labels and taints must reach the nodes through the template or the infrastructure
provider's kubelet settings; nodes are found through their Machines, not the sparsam.dev/pool
label.
"""

from __future__ import annotations

from typing import Any, Final, cast

from kubernetes.client import ApiClient, CustomObjectsApi

from sparsam.api import constants as c
from sparsam.api.gpunodepool import GPUNodePool, MachineDeploymentRef
from sparsam.decisions.cluster import Resources, node_labels, node_taints
from sparsam.providers._kube import call
from sparsam.providers.kwok import cpu_quantity, memory_quantity
from sparsam.providers.nodepool import NodePoolProvider, NotFound, NotSupported, check_scale_up

GROUP: Final = "cluster.x-k8s.io"
VERSION: Final = "v1beta1"
MACHINE_DEPLOYMENTS: Final = "machinedeployments"
MACHINES: Final = "machines"
#: Machines of a MachineDeployment carry this label with its name.
LABEL_DEPLOYMENT_NAME: Final = "cluster.x-k8s.io/deployment-name"
#: A MachineSet scaling down deletes Machines with this annotation first.
ANNOTATION_DELETE_MACHINE: Final = "cluster.x-k8s.io/delete-machine"

#: The Cluster API autoscaler's scale-from-zero annotations (cluster-autoscaler
#: cloudprovider/clusterapi README, "Scale from zero support").
CAPACITY_PREFIX: Final = "capacity.cluster-autoscaler.kubernetes.io/"
CAPACITY_CPU: Final = f"{CAPACITY_PREFIX}cpu"
CAPACITY_MEMORY: Final = f"{CAPACITY_PREFIX}memory"
CAPACITY_MAX_PODS: Final = f"{CAPACITY_PREFIX}maxPods"
CAPACITY_GPU_TYPE: Final = f"{CAPACITY_PREFIX}gpu-type"
CAPACITY_GPU_COUNT: Final = f"{CAPACITY_PREFIX}gpu-count"
CAPACITY_LABELS: Final = f"{CAPACITY_PREFIX}labels"
CAPACITY_TAINTS: Final = f"{CAPACITY_PREFIX}taints"
MAX_PODS: Final = "110"


def capacity_annotations(pool: GPUNodePool) -> dict[str, str]:
    """What one node of the pool offers, as the autoscaler's scale-from-zero annotations.

    `gpu-type` is the extended resource name (`nvidia.com/gpu`), as the autoscaler expects; the
    GPU product is in the labels annotation (`nvidia.com/gpu.product=...`). Labels are
    `k=v,k=v` and taints `k=v:Effect` (or `k:Effect` without a value), sorted, so applying twice
    writes the same strings.
    """
    spec = pool.spec
    template = spec.node_template
    resources = Resources.of(template.gpus_per_node, template.cpu, template.memory)
    annotations = {
        CAPACITY_CPU: cpu_quantity(resources.cpu_millis),
        CAPACITY_MEMORY: memory_quantity(resources.memory_bytes),
        CAPACITY_MAX_PODS: MAX_PODS,
    }
    if resources.gpus > 0:
        annotations[CAPACITY_GPU_TYPE] = c.GPU_RESOURCE
        annotations[CAPACITY_GPU_COUNT] = str(resources.gpus)
    labels = node_labels(pool.metadata.name, spec)
    if labels:
        annotations[CAPACITY_LABELS] = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    taints = sorted(
        (f"{t.key}={t.value}:{t.effect}" if t.value else f"{t.key}:{t.effect}")
        for t in node_taints(spec)
    )
    if taints:
        annotations[CAPACITY_TAINTS] = ",".join(taints)
    return annotations


class ClusterAPINodePoolProvider:
    """NodePoolProvider for `spec.provider.clusterAPI`."""

    def __init__(self, api: ApiClient) -> None:
        self._custom = CustomObjectsApi(api)

    def _ref(self, pool: GPUNodePool) -> MachineDeploymentRef:
        cluster_api = pool.spec.provider.cluster_api
        if cluster_api is None:
            raise NotSupported(pool.metadata.name, "its provider is not clusterAPI")
        return cluster_api.machine_deployment

    def _what(self, ref: MachineDeploymentRef) -> str:
        return f"MachineDeployment {ref.namespace}/{ref.name}"

    def _read_scale(self, pool: GPUNodePool) -> dict[str, Any]:
        ref = self._ref(pool)
        scale = call(
            pool.metadata.name,
            f"reading the scale of {self._what(ref)}",
            lambda: self._custom.get_namespaced_custom_object_scale(
                GROUP, VERSION, ref.namespace, MACHINE_DEPLOYMENTS, ref.name
            ),
        )
        return cast(dict[str, Any], scale)

    def _write_scale(self, pool: GPUNodePool, scale: dict[str, Any], replicas: int) -> None:
        ref = self._ref(pool)
        body = {**scale, "spec": {**(scale.get("spec") or {}), "replicas": replicas}}
        call(
            pool.metadata.name,
            f"scaling {self._what(ref)} to {replicas}",
            lambda: self._custom.replace_namespaced_custom_object_scale(
                GROUP,
                VERSION,
                ref.namespace,
                MACHINE_DEPLOYMENTS,
                ref.name,
                body,
                field_manager=c.FIELD_MANAGER,
            ),
        )

    @staticmethod
    def _replicas(scale: dict[str, Any]) -> int:
        return int((scale.get("spec") or {}).get("replicas") or 0)

    def size(self, pool: GPUNodePool) -> int:
        return self._replicas(self._read_scale(pool))

    def apply_capacity_annotations(self, pool: GPUNodePool) -> None:
        """Server-side apply of `capacity_annotations(pool)` onto the MachineDeployment."""
        ref = self._ref(pool)
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "MachineDeployment",
            "metadata": {
                "name": ref.name,
                "namespace": ref.namespace,
                "annotations": capacity_annotations(pool),
            },
        }
        call(
            pool.metadata.name,
            f"annotating {self._what(ref)}",
            lambda: self._custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                ref.namespace,
                MACHINE_DEPLOYMENTS,
                ref.name,
                body,
                field_manager=c.FIELD_MANAGER,
                force=True,
                _content_type="application/apply-patch+yaml",
            ),
        )

    def scale_up(self, pool: GPUNodePool, count: int) -> list[str]:
        # Annotations first (idempotent, harmless on their own): the scale write then carries a
        # resourceVersion read after them, and fails (409, Transient) only on a real race.
        self.apply_capacity_annotations(pool)
        scale = self._read_scale(pool)
        current = self._replicas(scale)
        check_scale_up(pool, current, count)
        self._write_scale(pool, scale, current + count)
        return []

    def _machine_of(self, pool: GPUNodePool, node_name: str) -> dict[str, Any]:
        ref = self._ref(pool)
        found: Any = call(
            pool.metadata.name,
            f"listing the Machines of {self._what(ref)}",
            lambda: self._custom.list_namespaced_custom_object(
                GROUP,
                VERSION,
                ref.namespace,
                MACHINES,
                label_selector=f"{LABEL_DEPLOYMENT_NAME}={ref.name}",
            ),
        )
        for machine in found.get("items") or []:
            node_ref = (machine.get("status") or {}).get("nodeRef") or {}
            if node_ref.get("name") == node_name:
                result: dict[str, Any] = machine
                return result
        raise NotFound(pool.metadata.name, f"no Machine of {self._what(ref)} has node {node_name}")

    def delete_node(self, pool: GPUNodePool, node_name: str) -> None:
        ref = self._ref(pool)
        machine = self._machine_of(pool, node_name)
        metadata = machine.get("metadata") or {}
        if metadata.get("deletionTimestamp") or ANNOTATION_DELETE_MACHINE in (
            metadata.get("annotations") or {}
        ):
            return  # already on its way out: never drop the size twice for one node
        name = metadata["name"]
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Machine",
            "metadata": {
                "name": name,
                "namespace": ref.namespace,
                "annotations": {ANNOTATION_DELETE_MACHINE: "yes"},
            },
        }
        call(
            pool.metadata.name,
            f"marking Machine {ref.namespace}/{name} for deletion",
            lambda: self._custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                ref.namespace,
                MACHINES,
                name,
                body,
                field_manager=c.FIELD_MANAGER,
                force=True,
                _content_type="application/apply-patch+yaml",
            ),
        )
        scale = self._read_scale(pool)
        current = self._replicas(scale)
        if current > 0:
            self._write_scale(pool, scale, current - 1)


def _conforms(provider: ClusterAPINodePoolProvider) -> NodePoolProvider:
    return provider  # mypy checks that ClusterAPINodePoolProvider implements the Protocol
