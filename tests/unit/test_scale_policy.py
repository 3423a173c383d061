"""The scaling rule of worker pools."""

from __future__ import annotations

import pytest

from palm.workers.autoscale import ScalePolicy


def test_the_pool_grows_at_once_within_its_bounds() -> None:
    policy = ScalePolicy(1, 4, jobs_per_worker=10)
    assert policy.decide(1, 0, now=0) == 1
    assert policy.decide(1, 25, now=0) == 3
    assert policy.decide(1, 1000, now=0) == 4


def test_the_pool_shrinks_only_after_a_lull_that_lasts() -> None:
    policy = ScalePolicy(1, 4, jobs_per_worker=10, scale_down_after_s=5)
    assert policy.decide(4, 0, now=100) == 4
    assert policy.decide(4, 0, now=103) == 4
    assert policy.decide(4, 35, now=104) == 4  # busy again: the lull starts over
    assert policy.decide(4, 0, now=105) == 4
    assert policy.decide(4, 0, now=110) == 1


def test_bounds_are_checked() -> None:
    with pytest.raises(ValueError):
        ScalePolicy(3, 2)


def test_scale_out_waits_for_the_window_but_a_cold_start_does_not() -> None:
    policy = ScalePolicy(0, 10, jobs_per_worker=4, scale_up_window_s=3)
    assert policy.decision(0, 1, now=0).desired == 1  # no worker: start one at once
    assert policy.decide(1, 40, now=1) == 1
    assert policy.decide(1, 40, now=3) == 1
    assert policy.decide(1, 2, now=3.5) == 1  # the burst passed: the window starts over
    assert policy.decide(1, 40, now=4) == 1
    decision = policy.decision(1, 40, now=7)
    assert decision.desired == 10
    assert "above 4 per worker" in decision.reason


def test_hysteresis_leaves_a_dead_band_and_scale_in_waits_a_cool_down() -> None:
    policy = ScalePolicy(0, 19, jobs_per_worker=4, scale_down_after_s=5, hysteresis=0.25)
    assert policy.decide(3, 13, now=0) == 4  # 13 > 3 * 4: out
    # 10..12 jobs need 3 workers at the target but 4 at the lowered one (3 each): stay
    for t in range(1, 30):
        assert policy.decide(4, 10 + t % 3, now=t) == 4
    assert policy.decide(4, 0, now=30) == 4
    assert policy.decide(4, 0, now=34) == 4
    decision = policy.decision(4, 0, now=35)
    assert decision.desired == 0
    assert "needs 0" in decision.reason


def test_a_scale_event_restarts_the_cool_down() -> None:
    policy = ScalePolicy(0, 8, jobs_per_worker=1, scale_down_after_s=10)
    assert policy.decide(2, 8, now=0) == 8
    assert policy.decide(8, 0, now=1) == 8
    assert policy.decide(8, 0, now=10) == 8  # 9 s since the scale event
    assert policy.decide(8, 0, now=11) == 0


def test_a_steady_trickle_never_flaps() -> None:
    """A backlog wobbling around a target, for ten simulated minutes, sampled each
    second: after the first growth, no scale event at all."""
    import random

    rng = random.Random(7)
    policy = ScalePolicy(0, 19, jobs_per_worker=4, scale_down_after_s=10, hysteresis=0.25)
    current, events = 0, 0
    for t in range(600):
        backlog = 12 + rng.choice((-1, 0, 1))  # 11..13: 3 or 4 workers at the target
        desired = policy.decide(current, backlog, now=float(t))
        if desired != current:
            events += 1
            current = desired
    assert events <= 2  # the growth to 3, then 4; never back
    assert current == 4


def test_bounds_win_over_the_backlog() -> None:
    policy = ScalePolicy(2, 3, jobs_per_worker=1)
    assert policy.decide(0, 0, now=0) == 2
    assert policy.decide(5, 0, now=0) == 3
    with pytest.raises(ValueError):
        ScalePolicy(0, 1, hysteresis=1)
