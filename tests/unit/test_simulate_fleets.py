"""The synthetic fleets of the scale-to-zero benchmark: seeded, sorted, shaped as documented
(bursty: idle seconds, Zipf skew, bounded idle gaps; periodic: calls every period)."""

from __future__ import annotations

import itertools

import pytest

from sparsam.simulate.fleets import (
    BurstyFleet,
    PeriodicFleet,
    bursty_fleet,
    idle_fraction,
    periodic_fleet,
)
from sparsam.simulate.serving import Request


def test_bursty_fleet_is_seeded_sorted_and_shaped() -> None:
    shape = BurstyFleet()
    fleet = bursty_fleet(shape, seed=0)
    assert fleet == bursty_fleet(shape, seed=0)
    assert fleet != bursty_fleet(shape, seed=1)
    assert len(fleet) == shape.services
    for service in fleet:
        arrivals = [r.arrival_s for r in service]
        assert arrivals == sorted(arrivals)
        assert all(0 <= a < shape.horizon_s for a in arrivals)
        # No idle gap beyond the cap plus one in-burst gap's worth of slack.
        assert max(b - a for a, b in itertools.pairwise(arrivals)) < shape.idle_max_s + 60
    # Zipf: the first service is the busiest (the 10-minute cap flattens the tail).
    assert len(fleet[0]) == max(len(s) for s in fleet)
    assert len(fleet[0]) > 1.5 * len(fleet[-1])
    # About 73 % of seconds have no request (the documented calibration).
    assert 0.66 <= idle_fraction(fleet, shape.horizon_s) <= 0.80


def test_periodic_fleet_calls_every_period() -> None:
    shape = PeriodicFleet(services=3, periods_min=(2.0,), jitter_s=1.0, calls=1)
    fleet = periodic_fleet(shape, seed=4)
    assert fleet == periodic_fleet(shape, seed=4)
    for service in fleet:
        gaps = [b.arrival_s - a.arrival_s for a, b in itertools.pairwise(service)]
        assert len(service) >= 29
        assert all(110 <= g <= 130 for g in gaps)


def test_idle_fraction() -> None:
    fleet = [[Request(0.5, 1, 1), Request(0.9, 1, 1)], [Request(3.2, 1, 1)]]
    assert idle_fraction(fleet, 4) == pytest.approx(0.5)
    assert idle_fraction([], 0) == 0.0


def test_bad_shapes_raise() -> None:
    with pytest.raises(ValueError, match="services"):
        bursty_fleet(BurstyFleet(services=0))
    with pytest.raises(ValueError, match="periods"):
        periodic_fleet(PeriodicFleet(periods_min=()))
