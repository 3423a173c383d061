"""PUMA's client as its users wrote it: ``await puma_map(fn, data)`` (the paper's
Fig. 6), the repository's ``puma_map(mode=..., func=..., data=...)``, and a
deployment running elsewhere reached by its address."""

from __future__ import annotations

import asyncio
import math
import re
import sys
import warnings
from collections.abc import Callable, Iterator

import pytest

from palm.errors import ConfigError
from palm.ops.puma_map import local_cluster
from palm.puma import puma_config, puma_map, puma_stop
from tests.compat.conftest import PROGRAMS
from tests.fixtures.procs import Processes

pytestmark = pytest.mark.timeout(90)


def make_factorial() -> Callable[[int], int]:
    """A function defined here, so it travels by value (as a notebook's would)."""

    def factorial(n: int) -> int:
        return math.factorial(n)

    return factorial


@pytest.fixture(autouse=True)
def _clean_puma() -> Iterator[None]:
    puma_config({})
    try:
        yield
    finally:
        puma_stop()
        puma_config({})


def test_puma_map_starts_one_local_cluster_and_reuses_it_with_one_warning() -> None:
    factorial = make_factorial()
    data = list(range(30))
    expected = [math.factorial(n) for n in data]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert asyncio.run(puma_map(factorial, data)) == expected
        first = local_cluster()
        assert first is not None
        # PUMA's repository's keyword form, on the same cluster
        assert asyncio.run(puma_map(mode="parallel", func=factorial, data=data)) == expected
        assert local_cluster() is first
    started = [w for w in caught if "local cluster" in str(w.message)]
    assert len(started) == 1
    assert re.search(r"started \(\d+\.\d s\); later calls reuse it", str(started[0].message))


def test_sequential_mode_needs_no_cluster_and_a_wrong_mode_is_refused() -> None:
    factorial = make_factorial()
    assert asyncio.run(puma_map(mode="sequential", func=factorial, data=[3, 4])) == [6, 24]
    assert local_cluster() is None
    with pytest.raises(ConfigError, match="mode must be one of"):
        asyncio.run(puma_map(factorial, [1], mode="gpu"))


def test_puma_map_runs_on_a_deployment_started_elsewhere_with_puma_start_alone(
    procs: Processes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PALM_SECRET", "test-secret")  # what the deployment's processes use
    proc = procs.start([sys.executable, str(PROGRAMS / "puma" / "deployment.py")])
    assert proc.stdout is not None
    line = proc.stdout.readline()
    found = re.search(r"puma_map address: (tcp://\S+)", line)
    assert found, line
    address = found.group(1)
    factorial = make_factorial()
    data = list(range(20))
    expected = [math.factorial(n) for n in data]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no local cluster is started
        assert asyncio.run(puma_map(factorial, data, address=address)) == expected
        puma_config({"address": address})
        assert asyncio.run(puma_map(func=factorial, data=data, mode="parallel")) == expected
    assert local_cluster() is None
    assert proc.poll() is None
