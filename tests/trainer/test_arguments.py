"""The trainer's command lines share one set of argument types and one wording for errors."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import pytest

from sparsam_trainer.arguments import FRACTION, NON_NEGATIVE, PORT, POSITIVE, SECONDS


@pytest.mark.parametrize(
    ("parse", "text", "value"),
    [
        (POSITIVE, "3", 3),
        (NON_NEGATIVE, "0", 0),
        (PORT, "8080", 8080),
        (SECONDS, "2.5", 2.5),
        (FRACTION, "0", 0.0),
    ],
    ids=["positive", "non-negative", "port", "seconds", "fraction"],
)
def test_accepts(parse: Callable[[str], float], text: str, value: float) -> None:
    assert parse(text) == value


@pytest.mark.parametrize(
    ("parse", "text", "message"),
    [
        (POSITIVE, "0", "expected an integer >= 1, got '0'"),
        (POSITIVE, "two", "expected an integer >= 1, got 'two'"),
        (PORT, "65536", "expected an integer in 1..65535, got '65536'"),
        (SECONDS, "-1", "expected a number >= 0, got '-1'"),
        (SECONDS, "nan", "expected a number >= 0, got 'nan'"),
        (FRACTION, "1", "expected a number >= 0 and < 1, got '1'"),
    ],
    ids=["zero", "word", "port-too-high", "negative", "nan", "fraction-one"],
)
def test_rejects_naming_the_range(parse: Callable[[str], float], text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="^" + message.replace(".", r"\.") + "$"):
        parse(text)
