"""Argument types shared by the `train`, `compress` and `serve` command lines: one wording for
a bad number everywhere ("--port: expected an integer in 1..65535, got 'http'")."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def integer(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An int in [minimum, maximum] (no maximum when None)."""
    span = f"in {minimum}..{maximum}" if maximum is not None else f">= {minimum}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"expected an integer {span}, got {text!r}")
        return value

    return parse


def number(minimum: float, below: float | None = None) -> Callable[[str], float]:
    """A finite float in [minimum, below) (no upper bound when None)."""
    span = f">= {minimum:g}" + (f" and < {below:g}" if below is not None else "")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < minimum or (below is not None and value >= below):
            raise argparse.ArgumentTypeError(f"expected a number {span}, got {text!r}")
        return value

    return parse


POSITIVE = integer(1)
NON_NEGATIVE = integer(0)
PORT = integer(1, 65535)
SECONDS = number(0.0)
FRACTION = number(0.0, 1.0)
