"""Names of the sparsam.dev API: group, version, kinds, label and annotation keys.

Every other module takes these names from here, so a rename happens in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

GROUP: Final = "sparsam.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

#: Kopf and server-side apply write as this manager, so `managedFields` says who owns what.
FIELD_MANAGER: Final = "sparsam"
#: Prefix of annotations we write (Kopf progress and diff-base included), never kopf.zalando.org.
ANNOTATION_PREFIX: Final = GROUP
FINALIZER: Final = f"{GROUP}/finalizer"


@dataclass(frozen=True, slots=True)
class Resource:
    """One custom resource of ours, with the names the apiserver knows it by."""

    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    namespaced: bool

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


TRAINING_JOB: Final = Resource("TrainingJob", "trainingjobs", "trainingjob", ("tj",), True)
# `isvc` belongs to KServe; ours is `infer` so both can live in one cluster.
INFERENCE_SERVICE: Final = Resource(
    "InferenceService", "inferenceservices", "inferenceservice", ("infer",), True
)
COST_POLICY: Final = Resource("CostPolicy", "costpolicies", "costpolicy", ("cp",), False)
GPU_NODE_POOL: Final = Resource("GPUNodePool", "gpunodepools", "gpunodepool", ("gpupool",), False)

RESOURCES: Final = (TRAINING_JOB, INFERENCE_SERVICE, COST_POLICY, GPU_NODE_POOL)

# Well-known node labels and taints, as real clusters set them.
GPU_RESOURCE: Final = "nvidia.com/gpu"
LABEL_GPU_PRODUCT: Final = "nvidia.com/gpu.product"
LABEL_GPU_COUNT: Final = "nvidia.com/gpu.count"
LABEL_INSTANCE_TYPE: Final = "node.kubernetes.io/instance-type"
LABEL_CAPACITY_TYPE: Final = "karpenter.sh/capacity-type"
LABEL_OS: Final = "kubernetes.io/os"
LABEL_ARCH: Final = "kubernetes.io/arch"
CAPACITY_SPOT: Final = "spot"
CAPACITY_ON_DEMAND: Final = "on-demand"
#: GPU nodes carry this taint (GKE and the EKS GPU node groups do), so only GPU pods land there.
TAINT_GPU: Final = GPU_RESOURCE
#: Spot nodes carry this taint, so only pods that accept preemption land there.
TAINT_SPOT: Final = LABEL_CAPACITY_TYPE

# Labels we put on what we create, for ownership and cost attribution.
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LABEL_POOL: Final = f"{GROUP}/pool"

# What the capacity controller reads on pods and writes on nodes.
#: Karpenter's annotation: never evict this pod to empty its node.
ANNOTATION_DO_NOT_DISRUPT: Final = "karpenter.sh/do-not-disrupt"
#: A pod's spot policy (Prefer, Require, Never), set by the controller that made the pod;
#: a pod without it is Prefer (its tolerations still decide where it may go).
LABEL_SPOT_POLICY: Final = f"{GROUP}/spot"
#: Training workers carry role=worker; they may be moved only with a fresh checkpoint, which
#: the TrainingJob controller says with checkpoint-fresh="true".
LABEL_ROLE: Final = f"{GROUP}/role"
ROLE_WORKER: Final = "worker"
#: The pod that compresses a TrainingJob's model after training.
ROLE_COMPRESS: Final = "compress"
#: A TrainingJob's pods: the job's name, and each worker's stable index.
LABEL_JOB: Final = f"{GROUP}/job"
LABEL_WORKER_INDEX: Final = f"{GROUP}/worker-index"
ANNOTATION_CHECKPOINT_FRESH: Final = f"{GROUP}/checkpoint-fresh"
#: On a TrainingJob: what the operator itself observed of its end, "<stage> <RFC 3339>" with
#: stage Trained (training succeeded, delivery follows), Succeeded or Failed. A finished phase
#: in status that this does not back is not believed (status is anyone's to write).
ANNOTATION_OUTCOME: Final = f"{GROUP}/outcome"
#: On a node we cordoned to drain it: why (ScaleDown or Interruption). A cordon without it is
#: someone else's, and we never lift it; one with it that the plan no longer wants is lifted.
ANNOTATION_DRAINING: Final = f"{GROUP}/draining"

# InferenceServices.
#: Every model-server pod (and Deployment) of an InferenceService: the service's name.
LABEL_INFERENCE_SERVICE: Final = f"{GROUP}/inference-service"
#: On an InferenceService: when the activator last held a request for it at zero replicas
#: (RFC 3339, UTC, microseconds). A value newer than the operator last handled wakes it.
ANNOTATION_WAKE_REQUESTED: Final = f"{GROUP}/wake-requested-at"
#: On a Deployment we manage: a digest of what we last applied, so an unchanged one is not
#: applied again on every pass.
ANNOTATION_APPLIED: Final = f"{GROUP}/applied"
#: Which of an InferenceService's Deployments a replica belongs to: the on-demand base, or the
#: replicas placed by the spot policy. Part of each Deployment's (immutable) selector, so a
#: change of spot policy never needs a new selector.
LABEL_TRACK: Final = f"{GROUP}/track"
TRACK_MAIN: Final = "main"
TRACK_ON_DEMAND_BASE: Final = "on-demand-base"
