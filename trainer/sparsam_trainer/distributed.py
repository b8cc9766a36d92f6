"""The torch.distributed process group as this trainer uses it, and the preemption signal.

Under torchrun the environment names rank and world size; without it (``python -m
sparsam_trainer train``) the trainer runs as a world of one without a process group, so the same
code serves tests, laptops and pods. gloo on CPU, nccl when the worker has a GPU.

Preemption: SIGTERM only sets a flag. The training loop all-reduces that flag after every step,
so all ranks stop after the same step even though the kubelet (or torchrun) signals them at
slightly different times, and rank 0 can checkpoint a state that every rank agrees on.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from datetime import timedelta
from types import FrameType

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return dist.is_available() and dist.is_initialized()


def init_world(timeout: timedelta) -> World:
    """Join the process group torchrun describes in the environment, if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
    if world_size > 1 or "TORCHELASTIC_RUN_ID" in os.environ:
        dist.init_process_group(backend=backend, timeout=timeout)
        rank, world_size = dist.get_rank(), dist.get_world_size()
    return World(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def all_reduce_sum(world: World, tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (a no-op in a world of one) and return it."""
    if world.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def agree(world: World, value: int) -> bool:
    """Whether every rank passed the same ``value``."""
    if not world.distributed:
        return True
    extremes = torch.tensor([value, -value], dtype=torch.int64, device=world.device)
    dist.all_reduce(extremes, op=dist.ReduceOp.MAX)
    return int(extremes[0]) == value == -int(extremes[1])


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def shutdown(world: World) -> None:
    if world.distributed:
        dist.destroy_process_group()


class StopRequest:
    """Remembers that SIGTERM arrived; the loop decides when to act on it."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: signal._HANDLER = None

    def install(self) -> None:
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def uninstall(self) -> None:
        signal.signal(signal.SIGTERM, self._previous or signal.SIG_DFL)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
