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
