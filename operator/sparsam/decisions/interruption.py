"""Is a node about to be taken away? Spot interruption notices, as clusters publish them.

A cloud gives a spot node a short notice before it reclaims it (two minutes on AWS, 30 s on
GCP); the node termination handlers turn that notice into a taint or a node condition. The
GPUNodePool controller drains such a node at once and provisions its replacement before the node
goes; the TrainingJob controller counts the loss as a preemption. Both read the same settings.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

#: Taint keys that announce the node's end: AWS node termination handler (spot interruption
#: notice, rebalance recommendation), GKE's impending termination, Karpenter's disruption.
DEFAULT_INTERRUPTION_TAINTS: Final = (
    "aws-node-termination-handler/spot-itn",
    "aws-node-termination-handler/rebalance-recommendation",
    "cloud.google.com/impending-node-termination",
    "karpenter.sh/disrupted",
)


@dataclass(frozen=True, slots=True)
class InterruptionSignals:
    """What counts as an interruption notice: any taint with one of `taint_keys`, or a node
    condition of one of `condition_types` with status True (node-problem-detector style)."""

    taint_keys: frozenset[str] = frozenset(DEFAULT_INTERRUPTION_TAINTS)
    condition_types: frozenset[str] = frozenset()

    def notice(self, taint_keys: Iterable[str], true_conditions: Iterable[str] = ()) -> str | None:
        """The first signal found (a taint key or condition type), or None."""
        for key in taint_keys:
            if key in self.taint_keys:
                return key
        for condition in true_conditions:
            if condition in self.condition_types:
                return condition
        return None
