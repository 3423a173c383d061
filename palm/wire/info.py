"""What a server or master answers INFO with: one schema for every kind of server.

A standalone server answers INFO on its own ROUTER; chained and pipelined
servers, masters and hubs answer it on their ``db_address``. All of them send
a :class:`ServiceInfo` as one msgpack map, and every reader (workers looking
for their master's addresses, clients, the gateway, autoscalers) reads it back
with :meth:`ServiceInfo.from_wire`. Missing fields take their defaults (an
older or smaller server), unknown ones are kept in ``extra``, and a field of
the wrong type is a :class:`~palm.errors.ProtocolError`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import msgpack

from palm.errors import ProtocolError

__all__ = ["ServiceInfo"]


@dataclass(slots=True)
class ServiceInfo:
    """A server's description.

    ``addresses`` holds its bound endpoints by label (``address`` for a
    standalone server's ROUTER; ``pull``, ``push``, ``next``, ``db``,
    ``worker_push``, ``worker_pull`` for the others). ``stats`` counts jobs:
    ``jobs_in``, ``jobs_out``, ``failed`` and, for masters, ``requeued`` and
    ``duplicates``. ``workers`` (masters) lists ``name``, ``pid``, ``host``,
    ``credit`` and ``done`` per worker; ``queued`` and ``inflight`` are the
    job messages a master holds; ``waiting`` the messages a stage holds for
    a peer that cannot take them now; ``completed`` the latest pipelines a
    sink saw end.
    """

    name: str
    kind: str = ""
    session: str = ""
    functions: list[str] = field(default_factory=list)
    address: str | None = None
    addresses: dict[str, str] = field(default_factory=dict)
    next_call: str | None = None
    pipelined: bool = False
    stats: dict[str, int] = field(default_factory=dict)
    workers: list[dict[str, Any]] = field(default_factory=list)
    queued: int = 0
    inflight: int = 0
    waiting: int = 0
    malformed: int = 0
    completed: list[dict[str, Any]] | None = None
    pid: int = 0
    host: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The map that travels: every field, ``extra``'s entries alongside."""
        out = {f: getattr(self, f) for f in _FIELDS}
        for key, value in self.extra.items():
            out.setdefault(key, value)
        return out

    def to_wire(self) -> bytes:
        packed = msgpack.packb(self.to_dict(), use_bin_type=True)
        assert isinstance(packed, bytes)
        return packed

    @classmethod
    def from_wire(cls, data: bytes | Mapping[str, Any]) -> ServiceInfo:
        """Read an INFO answer (its payload, or the map it unpacks to)."""
        if isinstance(data, bytes | bytearray | memoryview):
            try:
                data = msgpack.unpackb(bytes(data), raw=False)
            except (msgpack.UnpackException, ValueError) as exc:
                raise ProtocolError(f"an INFO answer that does not unpack: {exc}") from exc
        if not isinstance(data, Mapping):
            raise ProtocolError(f"an INFO answer is a map, got {type(data).__name__}")
        values: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in data.items():
            if key in _FIELDS:
                _check(key, value)
                values[key] = value
            elif isinstance(key, str):
                extra[key] = value
        if "name" not in values:
            raise ProtocolError("an INFO answer without a name")
        return cls(**values, extra=extra)


_FIELDS: Final = tuple(f.name for f in dataclasses.fields(ServiceInfo) if f.name != "extra")

_NONE = type(None)
_TYPES: Final[dict[str, tuple[type, ...]]] = {
    "name": (str,),
    "kind": (str,),
    "session": (str,),
    "functions": (list,),
    "address": (str, _NONE),
    "addresses": (dict,),
    "next_call": (str, _NONE),
    "pipelined": (bool,),
    "stats": (dict,),
    "workers": (list,),
    "queued": (int,),
    "inflight": (int,),
    "waiting": (int,),
    "malformed": (int,),
    "completed": (list, _NONE),
    "pid": (int,),
    "host": (str,),
}

#: What the items of the container fields hold.
_ITEMS: Final[dict[str, tuple[type, ...]]] = {
    "functions": (str,),
    "addresses": (str,),
    "stats": (int,),
    "workers": (dict,),
    "completed": (dict,),
}


def _check(key: str, value: object) -> None:
    if not isinstance(value, _TYPES[key]) or (isinstance(value, bool) and bool not in _TYPES[key]):
        raise ProtocolError(f"INFO field {key!r} is a {type(value).__name__}")
    items = _ITEMS.get(key)
    if items is None or value is None:
        return
    assert isinstance(value, list | dict)
    if isinstance(value, dict) and not all(isinstance(k, str) for k in value):
        raise ProtocolError(f"INFO field {key!r} has a key that is not a string")
    for item in value.values() if isinstance(value, dict) else value:
        if not isinstance(item, items) or (isinstance(item, bool) and bool not in items):
            raise ProtocolError(f"INFO field {key!r} holds a {type(item).__name__}")
