"""A client's session with a master or a chain: HELLO, WELCOME and restarts, free of I/O.

A client that receives on a DEALER says HELLO to the peer's ROUTER: it
registers the client's identity there (results are routed to it), collects
results kept for it, and the WELCOME that answers carries the peer's session
id and worker count. A HELLO per heartbeat interval is enough; calls in
between skip the round trip. A WELCOME with another session id than the last
one comes from a restarted master, which lost whatever the old one held: the
caller sends its outstanding jobs again. For that to hold, a client sends jobs
only once a WELCOME has named the session: a master that took jobs and died
before its first WELCOME would otherwise leave the successor's WELCOME to be
the first, with no change to notice, and the jobs would be lost.

:class:`Session` keeps that bookkeeping for one client identity. It reads no
clock and owns no socket: callers pass ``now`` (monotonic seconds) and send
the frames it builds themselves, blocking or asyncio alike::

    if session.hello_due(now):
        dealer.send_multipart(session.hello(now))
    ...
    if session.welcome(frames):      # True: a restarted master
        resend_outstanding()
"""

from __future__ import annotations

from palm.errors import ConfigError, ProtocolError
from palm.wire.control import Welcome
from palm.wire.messages import control
from palm.wire.protocol import Header, Kind, decode

__all__ = ["Session"]


class Session:
    """HELLO/WELCOME bookkeeping of one client identity.

    ``session_id`` is the peer's session as its last WELCOME said (None
    before any), ``workers`` its worker count then, ``hello_at`` when the last
    HELLO was built (``-inf`` before any).
    """

    __slots__ = ("client_id", "heartbeat_interval_s", "hello_at", "session_id", "workers")

    def __init__(self, client_id: bytes, heartbeat_interval_s: float = 1.0) -> None:
        if heartbeat_interval_s <= 0:
            raise ConfigError(
                f"heartbeat_interval_s must be positive, got {heartbeat_interval_s!r}"
            )
        self.client_id = client_id
        self.heartbeat_interval_s = heartbeat_interval_s
        self.session_id: str | None = None
        self.workers = 0
        self.hello_at = float("-inf")

    @property
    def welcomed(self) -> bool:
        """Whether a WELCOME has told the peer's session."""
        return self.session_id is not None

    def hello_due(self, now: float) -> bool:
        """Whether a call starting at ``now`` says HELLO first: never welcomed, or
        a heartbeat interval since the last HELLO."""
        return self.session_id is None or now - self.hello_at >= self.heartbeat_interval_s

    def beat_due(self, now: float, early_s: float = 0.0) -> bool:
        """Whether a call under way says HELLO again at ``now``: a heartbeat interval
        (less ``early_s``) since the last one."""
        return now - self.hello_at >= self.heartbeat_interval_s - early_s

    def hello(self, now: float) -> list[bytes]:
        """The frames of a HELLO sent at ``now`` (recorded as the last one)."""
        self.hello_at = now
        return control(Kind.HELLO, self.client_id)

    def welcome(self, frames: list[bytes]) -> bool:
        """Read a message that may be a WELCOME; True when it comes from a restarted
        peer (another session than the last WELCOME's): resend what is outstanding.

        Anything else (and frames that do not parse) is ignored: False.
        """
        try:
            header, _ = decode(frames)
        except ProtocolError:
            return False
        return self.read(header)

    def read(self, header: Header) -> bool:
        """:meth:`welcome` for a message already decoded."""
        if header.kind != Kind.WELCOME:
            return False
        try:
            welcome = Welcome.from_header(header)
        except ProtocolError:
            return False  # a WELCOME that does not read is no WELCOME
        if welcome.workers is not None:
            self.workers = welcome.workers
        restarted = self.session_id is not None and welcome.session != self.session_id
        self.session_id = welcome.session
        return restarted
