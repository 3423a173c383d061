"""The shared cache against a real redis-server."""

from __future__ import annotations

import subprocess
import sys
import uuid
from typing import TYPE_CHECKING

import pytest

from palm.errors import ConfigError
from palm.state.store import State, resolve_redis_url

if TYPE_CHECKING:
    from tests.fixtures.redis import RedisProcess

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def state(redis_proc: RedisProcess) -> State:
    return State(redis_proc.url, cluster=f"t{uuid.uuid4().hex[:8]}")


def test_a_value_set_can_be_read_back_and_deleted(state: State) -> None:
    key = state.set(b"\x00payload\xff", "k1")
    assert key == "k1"
    assert state.get("k1") == b"\x00payload\xff"
    assert state.delete("k1") is True
    assert state.get("k1") is None


def test_set_without_a_key_generates_distinct_keys(state: State) -> None:
    first = state.set(b"a")
    second = state.set(b"b")
    assert first != second
    assert (state.get(first), state.get(second)) == (b"a", b"b")


def test_missing_keys_read_as_none_and_delete_as_false(state: State) -> None:
    assert state.get("nothing-here") is None
    assert state.delete("nothing-here") is False


def test_keys_live_under_the_cluster_prefix(state: State) -> None:
    state.set(b"v", "k")
    assert state.client.get(f"palm:{state.cluster}:cache:k") == b"v"
    assert state.key("stats", "echo") == f"palm:{state.cluster}:stats:echo"


def test_clusters_do_not_see_each_other(redis_proc: RedisProcess) -> None:
    one = State(redis_proc.url, cluster="one")
    two = State(redis_proc.url, cluster="two")
    one.set(b"1", "k")
    assert two.get("k") is None


def test_set_rejects_values_that_are_not_bytes(state: State) -> None:
    with pytest.raises(TypeError):
        state.set("text", "k")  # type: ignore[arg-type]


def test_the_cache_is_shared_between_processes(state: State) -> None:
    child = (
        "import sys\n"
        "from palm.state.store import State\n"
        "s = State(sys.argv[1], cluster=sys.argv[2])\n"
        "sys.stdout.buffer.write(s.get('from-parent') or b'MISSING')\n"
        "s.set(b'written by child', 'from-child')\n"
    )
    state.set(b"written by parent", "from-parent")
    done = subprocess.run(
        [sys.executable, "-c", child, state.url, state.cluster],
        capture_output=True,
        timeout=30,
        check=True,
    )
    assert done.stdout == b"written by parent"
    assert state.get("from-child") == b"written by child"


def test_the_cache_survives_a_redis_restart(state: State, redis_proc: RedisProcess) -> None:
    state.set(b"durable", "k")
    old_pid = redis_proc.pid
    redis_proc.restart()  # SIGKILL, then a new server on the same data directory
    assert redis_proc.pid != old_pid
    assert state.get("k") == b"durable"
    state.set(b"after", "k2")
    assert state.get("k2") == b"after"


def test_resolve_redis_url_prefers_the_argument_then_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PALM_REDIS_URL", raising=False)
    assert resolve_redis_url() is None
    monkeypatch.setenv("PALM_REDIS_URL", "redis://127.0.0.1:7000/0")
    assert resolve_redis_url() == "redis://127.0.0.1:7000/0"
    assert resolve_redis_url("unix:///tmp/x.sock") == "unix:///tmp/x.sock"
    with pytest.raises(ConfigError):
        resolve_redis_url("http://127.0.0.1:7000")


def test_cluster_names_that_would_break_keys_are_refused(redis_proc: RedisProcess) -> None:
    for bad in ("", "a:b", "a b", "a*"):
        with pytest.raises(ConfigError):
            State(redis_proc.url, cluster=bad)
