"""What the benchmark report says of the machine around each section: load, speed
probe, the hypervisor's steal, and the warnings they raise."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

import psutil

from benchmarks.environments import (
    SpeedSampler,
    cores_together,
    speed_probe_ms,
    together_ratio,
    together_summary,
)
from benchmarks.report import _load_lines, fastest_probe
from benchmarks.timing import cpu_share

Times = namedtuple("Times", "user system idle steal")
QUIET = {"before": ["0.10, 0.20, 0.30", 2.0], "after": ["0.50, 0.40, 0.30", 1.0]}


def test_a_cpu_share_is_that_field_over_all_cpu_time_between_two_readings() -> None:
    before = Times(user=10.0, system=5.0, idle=80.0, steal=5.0)
    after = Times(user=40.0, system=15.0, idle=110.0, steal=35.0)  # 100 s spent
    assert cpu_share(before, after, "steal") == 30.0
    assert cpu_share(before, after, "idle") == 30.0
    assert cpu_share(after, after, "idle") == 0.0  # no time passed: nothing to divide
    NoSteal = namedtuple("NoSteal", "user system idle")
    assert cpu_share(NoSteal(1.0, 1.0, 1.0), NoSteal(2.0, 2.0, 2.0), "steal") == 0.0


def test_the_speed_probe_reads_a_positive_cpu_time() -> None:
    assert 0.0 < speed_probe_ms() < 10_000.0


def test_the_sampler_reads_at_once_then_every_interval_until_the_section_ends() -> None:
    with SpeedSampler(interval_s=0.05) as sampler:
        deadline = time.monotonic() + 30.0
        while len(sampler.readings) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    count = len(sampler.readings)
    assert count >= 3  # one at once, then one per interval
    time.sleep(0.15)
    assert len(sampler.readings) == count  # stopped with the section
    median, low, high = sampler.summary()
    assert 0.0 < low <= median <= high


def test_a_quiet_section_at_the_pass_best_speed_carries_no_warning() -> None:
    load = {**QUIET, "probe_ms": [5.0, 4.8, 6.1], "probes": 30, "steal": 0.5}
    lines = _load_lines(load, fastest_probe({"a": load}))
    assert any(line.startswith("Speed probe") and "median 5.0 ms" in line for line in lines)
    assert not any("Warning" in line for line in lines)


def test_a_slow_section_or_one_the_hypervisor_starved_is_flagged() -> None:
    fast = {**QUIET, "probe_ms": [5.0, 4.9, 5.5], "probes": 9, "steal": 0.5}
    slow = {**QUIET, "probe_ms": [7.0, 5.0, 9.0], "probes": 9, "steal": 0.5}
    starved = {**QUIET, "probe_ms": [5.0, 5.0, 5.1], "probes": 9, "steal": 12.0}
    fastest = fastest_probe({"fast": fast, "slow": slow, "starved": starved})
    assert fastest == 5.0
    for load in (slow, starved):
        assert any("ran slower during this section" in line for line in _load_lines(load, fastest))
    assert not any("Warning" in line for line in _load_lines(fast, fastest))


def test_a_section_recorded_before_the_probe_existed_still_renders() -> None:
    lines = _load_lines(dict(QUIET), fastest_probe({"old": dict(QUIET)}))
    assert lines[0].startswith("Machine load before")
    assert not any("Speed probe" in line or "Warning" in line for line in lines)


def test_two_cores_at_full_speed_read_1x_and_two_that_share_one_read_2x() -> None:
    assert together_ratio((4.0, 5.0), (4.0, 5.0)) == 1.0
    assert together_ratio((4.0, 5.0), (8.0, 10.0)) == 2.0
    assert together_ratio((4.0, 4.0), (4.0, 8.0)) == 1.5  # the mean of the two cores
    summary = together_summary([1.0, 1.8, 0.9, 1.1, 1.75])
    assert summary == {"median": 1.1, "low": 0.9, "high": 1.8, "shared": 0.4}


def test_the_cores_together_probe_reads_both_cores_and_leaves_no_helper_behind() -> None:
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    reading = cores_together(readings=3)
    assert reading is not None  # this machine has two cores
    assert 0.0 < reading["low"] <= reading["median"] <= reading["high"]
    assert 0.0 <= reading["shared"] <= 1.0
    assert {p.pid for p in psutil.Process().children(recursive=True)} == before


def test_a_section_whose_cores_shared_one_is_flagged_and_one_at_full_speed_is_not() -> None:
    full = {"median": 1.0, "low": 0.95, "high": 1.12, "shared": 0.0}
    shared = {"median": 1.7, "low": 1.0, "high": 1.85, "shared": 0.6}
    base = {**QUIET, "probe_ms": [5.0, 4.8, 6.1], "probes": 30, "steal": 0.5}
    quiet = _load_lines({**base, "together": {"before": full, "after": full}}, 5.0)
    said = [line for line in quiet if line.startswith("Both cores at once")]
    assert (
        len(said) == 1
        and "1.00x (0.95 - 1.12, 0% of readings over 1.3x) before the section" in said[0]
    )
    assert not any("Warning" in line for line in quiet)
    busy = _load_lines({**base, "together": {"before": full, "after": shared}}, 5.0)
    assert any(
        "1.70x (1.00 - 1.85, 60% of readings over 1.3x) after the section" in line for line in busy
    )
    assert any("did not always run at full speed together" in line for line in busy)
    # one reading in ten over the line is not enough for a warning
    once = {**full, "shared": 0.1, "high": 1.4}
    lines = _load_lines({**base, "together": {"before": once, "after": None}}, 5.0)
    assert any(line.startswith("Both cores at once") for line in lines)
    assert not any("Warning" in line for line in lines)


def test_the_probe_helpers_end_when_the_process_that_runs_the_probe_is_sigkilled() -> None:
    probe = subprocess.Popen(
        [sys.executable, "-c", "from benchmarks.environments import cores_together\n"
         "cores_together(readings=1_000_000)"],
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30.0
        helpers: list[psutil.Process] = []
        while len(helpers) < 2 and time.monotonic() < deadline:
            helpers = psutil.Process(probe.pid).children()
            time.sleep(0.05)
        assert len(helpers) == 2  # one pinned to each core, probing
        os.kill(probe.pid, signal.SIGKILL)
        probe.wait(10)
        # each helper sees its pipe closed and returns
        _gone, alive = psutil.wait_procs(helpers, timeout=10.0)
        alive = [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
        assert not alive
    finally:
        if probe.poll() is None:
            probe.kill()
            probe.wait()
