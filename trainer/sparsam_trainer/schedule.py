"""The learning-rate schedule: linear warmup, then cosine decay to zero.

Warmup keeps AdamW's first, badly estimated second moments from taking large steps (it matters
for fine-tuning MiniLM); cosine decay ends training at a small step size without a tuned
milestone. The schedule is a function of the global step only, so it survives resumes and changes
of world size unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable


def warmup_cosine(total_steps: int, warmup_fraction: float) -> Callable[[int], float]:
    """Factor on the peak rate for ``LambdaLR``: ``(s+1)/w`` for ``s < w``, then cosine to 0."""
    if not 0.0 <= warmup_fraction < 1.0:
        raise ValueError(f"warmup fraction must be in [0, 1), got {warmup_fraction}")
    warmup = max(1, round(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor
