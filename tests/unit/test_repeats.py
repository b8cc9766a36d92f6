"""`controllers.repeats`: an Event repeated with the same reason and message within the window
is counted, not posted again, as a Kubernetes event series counts its repeats; and what it
remembers stays bounded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sparsam.controllers.repeats import Repeats
from sparsam.controllers.results import Event

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
S = timedelta(seconds=1)
ERROR = Event("Warning", "ProviderError", "pool a: adding 1 to 1 nodes exceeds maxNodes 1")


def test_a_repeated_warning_is_posted_once_per_window_with_its_count() -> None:
    repeats = Repeats(None, every=timedelta(minutes=10))
    assert repeats.quieted("pool/a", [ERROR], NOW) == (ERROR,)
    for t in range(10, 600, 10):  # every pass for ten minutes
        assert repeats.quieted("pool/a", [ERROR], NOW + t * S) == ()
    (again,) = repeats.quieted("pool/a", [ERROR], NOW + 600 * S)
    assert again.message == f"{ERROR.message} (repeated 59 times since 12:00:00)"
    # A new window starts there: its repeats are counted from it.
    assert repeats.quieted("pool/a", [ERROR], NOW + 610 * S) == ()


def test_a_changed_message_another_object_or_a_normal_event_is_posted_at_once() -> None:
    repeats = Repeats(None, every=timedelta(minutes=10))
    repeats.quieted("pool/a", [ERROR], NOW)
    changed = Event("Warning", "ProviderError", "pool a: label key 'x y' is invalid")
    normal = Event("Normal", "ScaleUp", "add 1 node")
    assert repeats.quieted("pool/a", [changed, normal], NOW + S) == (changed, normal)
    assert repeats.quieted("pool/b", [ERROR], NOW + S) == (ERROR,)
    assert repeats.quieted("pool/a", [normal], NOW + 2 * S) == (normal,)


def test_only_the_listed_reasons_when_reasons_are_given() -> None:
    repeats = Repeats(["Unschedulable"], every=timedelta(minutes=10))
    stuck = Event("Warning", "Unschedulable", "no pool")
    lost = Event("Warning", "WorkerPreempted", "tj-worker-1: node gone")
    assert repeats.quieted("job", [stuck, lost], NOW) == (stuck, lost)
    assert repeats.quieted("job", [stuck, lost], NOW + S) == (lost,)


def test_what_it_remembers_is_bounded_by_the_live_series() -> None:
    repeats = Repeats(None, every=timedelta(minutes=1))
    for i in range(1000):
        repeats.quieted(f"pool/{i}", [ERROR], NOW)
        repeats.quieted(f"pool/{i}", [ERROR], NOW + S)  # counted
    repeats.quieted("pool/x", [], NOW + 3 * timedelta(minutes=1))
    assert len(repeats._said) == 0
    repeats.quieted("pool/y", [ERROR], NOW)
    repeats.forget("pool/y")
    assert len(repeats._said) == 0
