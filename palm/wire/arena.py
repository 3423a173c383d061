"""Large job payloads handed to workers on the same machine through shared memory.

A large payload sent the usual way is copied at every hop: into the client's
socket, out of it into the master, into the master's socket to the worker and
out of that. When the master's endpoints are on this machine, a client instead
writes a payload once into its :class:`Arena` (an anonymous ``memfd`` file
that lives as long as the client process) and sends a reference of
:data:`REF_BYTES` in its place; the worker reads the payload straight from the
client's file with :func:`read_shared`. The master passes the reference on as
it would the payload.

A reference names the client's process, the file descriptor of its arena, a
random token, the slot and its generation. A worker opens
``/proc/<pid>/fd/<fd>`` only when that descriptor is a ``memfd`` named after
the token, so a reference cannot make it read anything else; Linux lets it
open the file only when it runs as the same user, in the same PID namespace.
Every slot starts with a stamp (its generation and length) that the worker
reads before and after copying the payload out: a slot freed and reused
meanwhile (its job was answered by another worker after this one was taken
for dead) is never read as this job's payload.

A worker that cannot read a reference (another machine, user or container)
answers the job with :data:`UNREADABLE` and the client sends that payload
again inline, and no further payload through its arena.
"""

from __future__ import annotations

import os
import secrets
import stat
import struct
import sys
import threading
from collections.abc import Sequence
from typing import Any, Final

from palm.errors import ProtocolError

__all__ = [
    "REF_BYTES",
    "SHARED_FROM_BYTES",
    "SHARED_KEY",
    "UNREADABLE",
    "Arena",
    "available",
    "read_shared",
    "resolve",
]

#: Payloads at least this large go through the arena: from 32 KiB on, a stream through
#: a master and 2 workers took a quarter less CPU per job than inline.
SHARED_FROM_BYTES: Final = 64 * 1024

#: The key in a JOB header's ``extra`` saying its payloads are references.
SHARED_KEY: Final = "shm"

#: The error type a worker answers a reference it cannot read with.
UNREADABLE: Final = "palm.SharedPayloadUnavailable"

#: The prefix of an arena's ``memfd`` name; the token follows it in hex.
_PREFIX: Final = "palm-arena-"

# a reference: pid, fd, slot offset, payload length, generation, token
_REF: Final = struct.Struct("<IIQQQ16s")
REF_BYTES: Final = _REF.size
# a slot's stamp, at its start: generation, payload length
_STAMP: Final = struct.Struct("<QQ")

#: The smallest slot (stamp included); larger ones in eighths of a power of two.
_MIN_SLOT: Final = 64 * 1024


def slot_size(payload_bytes: int) -> int:
    """The size of the slots that hold payloads of ``payload_bytes``: the stamp and
    the payload, rounded up to an eighth of the next power of two (a slot wastes
    under a quarter of itself; a 1 MiB payload takes 1.25 MiB)."""
    need = _STAMP.size + payload_bytes
    if need <= _MIN_SLOT:
        return _MIN_SLOT
    step = (1 << (need - 1).bit_length()) // 8
    return -(-need // step) * step


def available() -> bool:
    """Whether this system can share payloads this way (Linux with ``memfd_create``)."""
    return sys.platform.startswith("linux") and hasattr(os, "memfd_create")


class Slot:
    """A piece of an arena holding one payload until its job is answered."""

    __slots__ = ("generation", "offset", "size")

    def __init__(self, offset: int, size: int) -> None:
        self.offset = offset
        self.size = size
        self.generation = 0


class Arena:
    """A client's shared-memory file of payload slots.

    :meth:`put` writes a payload into a free slot and returns its reference
    (None when the arena would grow past ``limit_bytes``: the payload then goes
    inline); :meth:`free` gives the slot back once its job is answered. Slots
    come in a few sizes (:func:`slot_size`) and are reused, so a stream of
    payloads of one size touches the same pages over and over. Thread-safe. The file closes
    with :meth:`close` or the process.
    """

    def __init__(self, limit_bytes: int = 256 * 1024 * 1024) -> None:
        if not available():
            raise ProtocolError("shared payloads need Linux (memfd_create)")
        self.limit_bytes = limit_bytes
        self.token = secrets.token_bytes(16)
        self.pid = os.getpid()
        self.fd: int | None = None  # the file, made by the first put
        self.closed = False
        self.size = 0  # the file's length: every slot ever carved
        self._free: dict[int, list[Slot]] = {}
        self._lock = threading.Lock()
        self._generation = 0
        #: payloads written, and slots in use now
        self.written = 0
        self.in_use = 0
        #: a worker could not read from the arena: clients send inline from then on
        self.refused = False

    def put(self, payload: bytes) -> tuple[bytes, Slot] | None:
        """Write ``payload`` into a slot: (its reference, the slot), or None when full."""
        size = slot_size(len(payload))
        with self._lock:
            if self.closed or self.refused or os.getpid() != self.pid:
                return None  # closed, or a forked child's copy: not ours to write
            fd = self.fd
            if fd is None:
                fd = self.fd = os.memfd_create(_PREFIX + self.token.hex(), os.MFD_CLOEXEC)
            free = self._free.get(size)
            if free:
                slot = free.pop()
            elif self.size + size <= self.limit_bytes:
                slot = Slot(self.size, size)
                self.size += size
            else:
                return None
            self._generation += 1
            slot.generation = self._generation
            self.in_use += 1
            # the stamp first, then the payload: a reader that saw the old stamp and
            # then any of the new bytes sees the new stamp when it looks again
            # (written under the lock, so close() cannot take the file away meanwhile)
            generation = slot.generation
            try:
                os.pwrite(fd, _STAMP.pack(generation, len(payload)), slot.offset)
                written = os.pwrite(fd, payload, slot.offset + _STAMP.size)
            except OSError:  # tmpfs out of room (ENOSPC): the payload goes inline
                written = -1
        if written != len(payload):
            self.free(slot)
            return None
        self.written += 1
        return _REF.pack(self.pid, fd, slot.offset, len(payload), generation, self.token), slot

    def free(self, slot: Slot) -> None:
        """Give ``slot`` back (its job is answered or given up)."""
        with self._lock:
            if slot.generation == 0:
                return  # freed already
            slot.generation = 0
            self.in_use -= 1
            self._free.setdefault(slot.size, []).append(slot)

    def close(self) -> None:
        with self._lock:
            fd, self.fd = self.fd, None
            self.closed = True
            self._free.clear()
        if fd is not None and os.getpid() == self.pid:
            os.close(fd)


def _expected_link(token: bytes) -> str:
    return f"/memfd:{_PREFIX}{token.hex()} (deleted)"


def read_shared(ref: bytes, max_bytes: int) -> bytes:
    """The payload a reference names; :class:`ProtocolError` saying why when it cannot.

    Opens nothing but a ``memfd`` named after the reference's token, never
    blocks, and never returns bytes of a slot reused since the reference was made.
    """
    if len(ref) != REF_BYTES:
        raise ProtocolError(f"a shared payload reference is {REF_BYTES} bytes, not {len(ref)}")
    pid, fd, offset, length, generation, token = _REF.unpack(ref)
    if length > max_bytes:
        raise ProtocolError(f"shared payload of {length} bytes is over the {max_bytes} limit")
    path = f"/proc/{pid}/fd/{fd}"
    expected = _expected_link(token)
    try:
        if os.readlink(path) != expected:
            raise ProtocolError("the reference names no palm arena")
        handle = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ProtocolError(f"cannot open the client's arena: {exc.strerror}") from None
    try:
        info = os.fstat(handle)
        # the descriptor opened is the one checked (not one reused in between)
        if not stat.S_ISREG(info.st_mode) or os.readlink(f"/proc/self/fd/{handle}") != expected:
            raise ProtocolError("the reference names no palm arena")
        end = offset + _STAMP.size + length
        if end > info.st_size:
            raise ProtocolError("the reference points past the end of the arena")
        if os.pread(handle, _STAMP.size, offset) != _STAMP.pack(generation, length):
            raise ProtocolError("the shared payload was given up before it was read")
        payload = os.pread(handle, length, offset + _STAMP.size)
        if len(payload) != length:
            raise ProtocolError("the shared payload is shorter than its reference says")
        if os.pread(handle, _STAMP.size, offset) != _STAMP.pack(generation, length):
            raise ProtocolError("the shared payload was given up while it was read")
        return payload
    except OSError as exc:
        raise ProtocolError(f"cannot read the client's arena: {exc.strerror}") from None
    finally:
        os.close(handle)


def resolve(extra: dict[str, Any] | None, jobs: Sequence[bytes], max_bytes: int) -> list[bytes]:
    """The payloads of a JOB message's jobs, read from the client's arena when
    ``extra`` says they are references (and the mark taken out of ``extra``, so a
    pipeline's next stage gets plain payloads). :class:`ProtocolError` when one
    cannot be read."""
    if not extra or extra.pop(SHARED_KEY, None) is None:
        return list(jobs)
    return [read_shared(bytes(ref), max_bytes) for ref in jobs]
