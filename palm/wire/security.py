"""CurveZMQ for palm sockets: the cluster's key material and the options it sets.

A keys directory (``palm keys generate DIR``) holds:

* ``server.key`` / ``server.key_secret``: the pair every binding process
  (server, master, stage) uses;
* ``client.key`` / ``worker.key`` / ``stage.key`` and their ``.key_secret``:
  the pair each kind of peer connects with (clients, workers, a stage
  connecting to the next stage or to an upstream);
* ``authorized/<role>/*.key``: the public keys each role accepts. Binding
  processes re-read these allow-lists every :data:`RELOAD_S` seconds, so a
  key added or removed there takes effect without a restart.

A process finds the directory through ``keys=`` (a path, a :class:`Keys`, a
:class:`Security`; ``False`` turns CURVE off) or else the ``PALM_KEYS``
environment variable. Without either, sockets are plain (loopback
development). :class:`Security` sets the CURVE options on a socket before it
binds (:meth:`Security.bind`, with the ZAP domain the authenticator checks)
or connects (:meth:`Security.connect`).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Final, TypeAlias

import zmq
import zmq.auth

from palm.errors import ConfigError

__all__ = [
    "ENV",
    "RELOAD_S",
    "ROLES",
    "Keys",
    "KeysOption",
    "Security",
    "add_pair",
    "generate",
    "is_wildcard",
    "security_for",
]

#: The environment variable naming the keys directory.
ENV: Final = "PALM_KEYS"
#: The roles of peers, each with its own key pair and allow-list.
ROLES: Final = ("client", "worker", "stage")
#: How often (seconds) a binding process re-reads the allow-lists.
RELOAD_S: Final = 2.0

_WILDCARD_HOSTS: Final = frozenset({"0.0.0.0", "*", "::", "[::]"})


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise ConfigError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    return role


def _load(path: Path) -> tuple[bytes, bytes | None]:
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the CURVE key {path}: {exc}") from exc
    if not public or len(public) != 40:
        raise ConfigError(f"{path} holds no CURVE public key")
    return public, secret


class Keys:
    """The key material of one keys directory (see the module's description)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory).expanduser().resolve()
        if not self.directory.is_dir():
            raise ConfigError(
                f"keys directory {self.directory} does not exist "
                f"(make one with: palm keys generate {directory})"
            )
        server = self.directory / "server.key"
        if not server.is_file():
            raise ConfigError(
                f"keys directory {self.directory} has no server.key "
                f"(make the keys with: palm keys generate {directory})"
            )
        self.server_public, _ = _load(server)
        self._lock = threading.Lock()
        self._allowed: dict[str, frozenset[bytes]] = {}
        self._read_at = -RELOAD_S

    def __repr__(self) -> str:
        return f"Keys({str(self.directory)!r})"

    def server_secret(self) -> bytes:
        """The server pair's secret key (binding processes need it)."""
        path = self.directory / "server.key_secret"
        if not path.is_file():
            raise ConfigError(f"keys directory {self.directory} has no server.key_secret to bind")
        _, secret = _load(path)
        if not secret:
            raise ConfigError(f"{path} holds no secret key")
        return secret

    def pair(self, role: str) -> tuple[bytes, bytes]:
        """The (public, secret) pair peers of ``role`` connect with."""
        path = self.directory / f"{_check_role(role)}.key_secret"
        if not path.is_file():
            raise ConfigError(f"keys directory {self.directory} has no {role}.key_secret")
        public, secret = _load(path)
        if not secret:
            raise ConfigError(f"{path} holds no secret key")
        return public, secret

    def allowed(self, role: str) -> frozenset[bytes]:
        """The z85 public keys ``authorized/<role>/`` holds (re-read every RELOAD_S)."""
        with self._lock:
            now = time.monotonic()
            if now - self._read_at >= RELOAD_S:
                self._allowed = {r: self._read_allowed(r) for r in ROLES}
                self._read_at = now
            return self._allowed.get(role, frozenset())

    def reload(self) -> None:
        """Re-read the allow-lists at the next look-up."""
        with self._lock:
            self._read_at = -RELOAD_S

    def role_of(self, z85_key: bytes, roles: tuple[str, ...] = ROLES) -> str | None:
        """The first of ``roles`` whose allow-list holds ``z85_key``, else None."""
        for role in roles:
            if z85_key in self.allowed(role):
                return role
        return None

    def _read_allowed(self, role: str) -> frozenset[bytes]:
        folder = self.directory / "authorized" / role
        keys: set[bytes] = set()
        if folder.is_dir():
            for path in sorted(folder.glob("*.key")):
                try:
                    keys.add(_load(path)[0])
                except ConfigError:
                    continue  # a half-written or foreign file: not a key
        return frozenset(keys)


class Security:
    """CURVE for the sockets of one process that connects as ``role``."""

    def __init__(self, keys: Keys, role: str) -> None:
        self.keys = keys
        self.role = _check_role(role)

    def __repr__(self) -> str:
        return f"Security({self.keys!r}, {self.role!r})"

    def connect(self, sock: zmq.Socket[Any]) -> None:
        """Make ``sock`` a CURVE client with this role's pair (before it connects)."""
        public, secret = self.keys.pair(self.role)
        sock.setsockopt(zmq.CURVE_SERVERKEY, self.keys.server_public)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, secret)

    def bind(self, sock: zmq.Socket[Any], domain: str) -> None:
        """Make ``sock`` a CURVE server whose peers the ZAP ``domain`` checks (before it binds)."""
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.keys.server_secret())
        sock.setsockopt(zmq.ZAP_DOMAIN, domain.encode())

    def as_role(self, role: str) -> Security:
        """The same keys, connecting as ``role``."""
        return Security(self.keys, role)


#: What ``keys=`` may be: a directory, loaded keys, a Security, False (off) or None (PALM_KEYS).
KeysOption: TypeAlias = "str | os.PathLike[str] | Keys | Security | bool | None"

_loaded: dict[Path, Keys] = {}
_loaded_lock = threading.Lock()


def _keys_at(directory: str | os.PathLike[str]) -> Keys:
    path = Path(directory).expanduser().resolve()
    with _loaded_lock:
        keys = _loaded.get(path)
        if keys is None:
            keys = _loaded[path] = Keys(path)
        return keys


def security_for(keys: KeysOption, role: str) -> Security | None:
    """The :class:`Security` a process connecting as ``role`` uses, or None (plain).

    A :class:`Security` passed in is used as it is, with its own role.

    ``keys`` None means the ``PALM_KEYS`` environment variable (unset or empty:
    plain); False means plain whatever the environment says.
    """
    _check_role(role)
    if keys is None:
        keys = os.environ.get(ENV) or False
    if keys is False:
        return None
    if keys is True:
        raise ConfigError("keys=True names no keys directory; pass a path")
    if isinstance(keys, Security):
        return keys  # its own role: what the caller chose
    if isinstance(keys, Keys):
        return Security(keys, role)
    if isinstance(keys, str | os.PathLike):
        return Security(_keys_at(keys), role)
    raise ConfigError(f"keys must be a directory, Keys or Security, got {type(keys).__name__}")


def is_wildcard(endpoint: str) -> bool:
    """True for a TCP endpoint bound on every interface (0.0.0.0, *, ::)."""
    if not endpoint.startswith("tcp://"):
        return False
    host = endpoint[len("tcp://") :].rsplit(":", 1)[0]
    return host in _WILDCARD_HOSTS


def _new_pair(directory: Path, name: str) -> Path:
    for suffix in (".key", ".key_secret"):
        if (directory / f"{name}{suffix}").exists():
            raise ConfigError(f"{directory / (name + suffix)} exists already; not overwriting it")
    public, _secret = zmq.auth.create_certificates(str(directory), name)
    os.chmod(directory / f"{name}.key_secret", 0o600)
    return Path(public)


def generate(directory: str | os.PathLike[str]) -> Path:
    """Write a cluster's key material into ``directory`` (made if missing)."""
    path = Path(directory).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    _new_pair(path, "server")
    for role in ROLES:
        public = _new_pair(path, role)
        folder = path / "authorized" / role
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(public, folder / f"{role}.key")
    return path


def add_pair(directory: str | os.PathLike[str], role: str, name: str) -> Path:
    """Make another pair ``name`` for ``role`` and allow it; the public key's path."""
    _check_role(role)
    if not name or "/" in name or name.startswith("."):
        raise ConfigError(f"a key name is a plain file name, got {name!r}")
    path = Path(directory).expanduser()
    if not (path / "server.key").is_file():
        raise ConfigError(f"{path} is not a keys directory (no server.key)")
    public = _new_pair(path, name)
    folder = path / "authorized" / role
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(public, folder / f"{name}.key")
    return public
