"""Keeping large message buffers: set once per process, left alone when asked."""

from __future__ import annotations

import os

import pytest

from palm.wire import allocator


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator, "_done_pid", 0)
    for name in ("PALM_MALLOC_TUNING", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("fresh")
@pytest.mark.parametrize(
    "name, value",
    [("PALM_MALLOC_TUNING", "0"), ("PALM_MALLOC_TUNING", "off"), ("MALLOC_TRIM_THRESHOLD_", "1")],
)
def test_the_environment_can_leave_the_allocator_alone(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    assert allocator.keep_large_buffers() is False
    assert allocator._done_pid == 0


@pytest.mark.usefixtures("fresh")
def test_glibc_takes_the_limits_once_per_process() -> None:
    if os.confstr("CS_GNU_LIBC_VERSION") is None:
        pytest.skip("not glibc")
    assert allocator.keep_large_buffers() is True
    assert allocator._done_pid == os.getpid()
    assert allocator.keep_large_buffers() is True  # the second call does nothing
