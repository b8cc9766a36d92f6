"""Fixtures for tests that run the trainer as pods would: as subprocesses, under torchrun.

Every subprocess gets one intra-op thread (the test machine has two cores, shared) and the
Hugging Face hub switched off.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

TORCHRUN = Path(sys.executable).with_name("torchrun")


@pytest.fixture
def trainer_env() -> dict[str, str]:
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture
def train_command() -> Callable[..., list[str]]:
    """``python -m sparsam_trainer train`` with ``options``, under torchrun if ``torchrun``."""

    def command(*options: str, torchrun: list[str] | None = None) -> list[str]:
        if torchrun is None:
            return [sys.executable, "-m", "sparsam_trainer", "train", *options]
        return [str(TORCHRUN), *torchrun, "-m", "sparsam_trainer", "train", *options]

    return command


@pytest.fixture
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
