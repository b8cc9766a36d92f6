"""What a kubelet makes of a container, for tests that stand in for one."""

from __future__ import annotations


def log_tail_message(log: str) -> str:
    """A failed container's termination message under `terminationMessagePolicy:
    FallbackToLogsOnError` when it wrote none itself: the end of its log, at most 80 lines
    and 2,048 bytes."""
    return "\n".join(log.splitlines()[-80:])[-2048:]
