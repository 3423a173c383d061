"""Key loading and the authenticator's role rules (in-process sockets on loopback)."""

from __future__ import annotations

from pathlib import Path

import pytest
import zmq

from palm.errors import ConfigError
from palm.serve.auth import accepts_for
from palm.serve.loop import Sockets
from palm.wire.security import Keys, Security, add_pair, generate, is_wildcard, security_for
from palm.wire.sockets import make_socket


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    return generate(tmp_path / "keys")


def test_generate_writes_pairs_and_allow_lists(keys: Path) -> None:
    loaded = Keys(keys)
    assert len(loaded.server_secret()) == 40
    for role in ("client", "worker", "stage"):
        public, secret = loaded.pair(role)
        assert loaded.allowed(role) == {public}
        assert len(secret) == 40
    assert (keys / "client.key_secret").stat().st_mode & 0o077 == 0
    with pytest.raises(ConfigError, match="exists already"):
        generate(keys)


def test_loading_errors_are_clear(tmp_path: Path, keys: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        Keys(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"no server\.key"):
        Keys(tmp_path / "empty")
    (keys / "worker.key_secret").unlink()
    with pytest.raises(ConfigError, match=r"no worker\.key_secret"):
        Keys(keys).pair("worker")
    with pytest.raises(ConfigError, match="role must be one of"):
        security_for(keys, "admin")


def test_keys_option_and_environment(monkeypatch: pytest.MonkeyPatch, keys: Path) -> None:
    monkeypatch.delenv("PALM_KEYS", raising=False)
    assert security_for(None, "client") is None
    monkeypatch.setenv("PALM_KEYS", str(keys))
    found = security_for(None, "worker")
    assert found is not None and found.role == "worker"
    assert found.keys.directory == keys.resolve()
    assert security_for(False, "client") is None  # off whatever the environment says
    given = Security(Keys(keys), "client")
    assert security_for(given, "worker") is given  # a Security keeps its role
    assert security_for(Keys(keys), "stage").role == "stage"  # type: ignore[union-attr]


def test_added_pair_is_allowed_and_removal_takes_effect(keys: Path) -> None:
    loaded = Keys(keys)
    public = add_pair(keys, "worker", "worker-2")
    loaded.reload()
    new_key = zmq.auth.load_certificate(str(public))[0]
    assert loaded.role_of(new_key) == "worker"
    assert loaded.role_of(new_key, ("client", "stage")) is None
    (keys / "authorized" / "worker" / "worker-2.key").unlink()
    loaded.reload()
    assert loaded.role_of(new_key) is None


def test_wildcard_hosts() -> None:
    assert is_wildcard("tcp://0.0.0.0:5555")
    assert is_wildcard("tcp://*:5555")
    assert is_wildcard("tcp://[::]:5555")
    assert not is_wildcard("tcp://127.0.0.1:5555")
    assert not is_wildcard("ipc:///tmp/x")


def test_socket_roles() -> None:
    assert accepts_for("worker_push") == ("worker",)
    assert accepts_for("worker_pull") == ("worker",)
    assert set(accepts_for("pull")) == {"client", "stage"}
    assert set(accepts_for("db")) == {"client", "worker", "stage"}


def _delivered(sockets: Sockets, label: str, sender: Security | None) -> bool:
    """Whether a PUSH with ``sender``'s key gets a message into the PULL bound as ``label``."""
    pull = sockets.bind(zmq.PULL, "tcp://127.0.0.1:*", label)
    push = make_socket(zmq.PUSH, curve=sender)
    push.setsockopt(zmq.SNDTIMEO, 3000)
    try:
        push.connect(sockets.bound[label])
        try:
            push.send(b"hello")
        except zmq.Again:
            return False
        return bool(pull.poll(1500))
    finally:
        push.close(0)


@pytest.mark.parametrize(
    ("label", "role", "allowed"),
    [
        ("worker_pull", "worker", True),
        ("worker_pull", "client", False),
        ("worker_pull", "stage", False),
        ("pull", "client", True),
        ("pull", "stage", True),
        ("pull", "worker", False),
        ("db", "worker", True),
    ],
)
def test_authenticator_role_rules(keys: Path, label: str, role: str, allowed: bool) -> None:
    sockets = Sockets("test", {}, None, security=security_for(keys, "stage"))
    try:
        assert _delivered(sockets, label, security_for(keys, role)) is allowed
        assert sockets.refusals.total == (0 if allowed else 1)
    finally:
        sockets.close()


def test_no_key_and_unknown_keys_get_nothing(tmp_path: Path, keys: Path) -> None:
    rogue = generate(tmp_path / "rogue")
    (rogue / "server.key").write_bytes((keys / "server.key").read_bytes())
    sockets = Sockets("test", {}, None, security=security_for(keys, "stage"))
    try:
        assert not _delivered(sockets, "pull", None)
        assert not _delivered(sockets, "pull", security_for(rogue, "client"))
        assert sockets.refusals.total == 1  # a plain peer fails before the allow-list
    finally:
        sockets.close()


def test_the_authenticator_restarts_at_once_after_it_stopped(keys: Path) -> None:
    """The last secured socket of a process stops its authenticator; the next one
    starts another while ZeroMQ may still be closing the old one's endpoints."""
    for _ in range(300):
        sockets = Sockets("test", {}, None, security=security_for(keys, "stage"))
        try:
            sockets.bind(zmq.PULL, "tcp://127.0.0.1:*", "pull")
        finally:
            sockets.close()
