"""Built-in tasks, by name: ``get_task("mnist-cnn")``, ``get_task("bbc-minilm")``.

Each task module is imported only when asked for, so serving an MNIST model never imports
transformers.
"""

from __future__ import annotations

from collections.abc import Callable

from sparsam_trainer.tasks.base import Splits, Task


def _mnist() -> Task:
    from sparsam_trainer.tasks.mnist import MnistCnnTask

    return MnistCnnTask()


def _bbc() -> Task:
    from sparsam_trainer.tasks.bbc import BbcMiniLmTask

    return BbcMiniLmTask()


_TASKS: dict[str, Callable[[], Task]] = {"mnist-cnn": _mnist, "bbc-minilm": _bbc}
TASK_NAMES = tuple(_TASKS)


def get_task(name: str) -> Task:
    """The built-in task called ``name``; ValueError naming the known tasks otherwise."""
    factory = _TASKS.get(name)
    if factory is None:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASK_NAMES)}")
    return factory()


__all__ = ["TASK_NAMES", "Splits", "Task", "get_task"]
