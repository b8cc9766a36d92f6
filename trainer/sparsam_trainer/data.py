"""Deterministic, resumable, re-shardable batches.

The data position is global: epoch ``e`` visits the training set in the order of a permutation
seeded with ``seed + e``, cut into global batches of ``--batch-size`` samples (the incomplete
tail is dropped), and rank ``r`` of ``W`` takes every W-th sample of each global batch. A
checkpoint records ``(epoch, batches consumed in the epoch)``; because neither depends on the
world size, a run resumed with more or fewer workers continues with exactly the samples the
interrupted run would have used next.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


def epoch_permutation(num_samples: int, seed: int, epoch: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed + epoch)
    return torch.randperm(num_samples, generator=generator)


def global_batches(
    num_samples: int, batch_size: int, seed: int, epoch: int, start: int = 0
) -> Iterator[torch.Tensor]:
    """Sample indices of the global batches ``start, start+1, ...`` of ``epoch``."""
    order = epoch_permutation(num_samples, seed, epoch)
    for batch in range(start, num_samples // batch_size):
        yield order[batch * batch_size : (batch + 1) * batch_size]


def shard(indices: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """This rank's part of a global batch (sizes differ by at most one)."""
    return indices[rank::world_size]


def subset_indices(num_samples: int, limit: int | None, seed: int) -> torch.Tensor | None:
    """A fixed random subset of at most ``limit`` indices (sorted), or None for all."""
    if limit is None or limit >= num_samples:
        return None
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(num_samples, generator=generator)[:limit].sort().values
