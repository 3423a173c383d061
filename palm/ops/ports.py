"""Free TCP ports to hand to a process, whether a port is free to listen on, and
who holds it when it is not.

A process that listens with ``SO_REUSEPORT`` (Envoy does) lets another such
process listen on the same port, and connections then split between the two
at random. :func:`holder` binds without that option, so it finds every
listener, and names the process when this user may see it.
"""

from __future__ import annotations

import errno
import random
import socket
import threading
from pathlib import Path

import psutil

__all__ = ["free_port", "holder", "taken_ports"]

#: the ports :func:`free_port` handed out in this process
_handed_out: set[int] = set()
_handed_lock = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` free right now, for another process to listen on
    a moment later; below the ephemeral range when it can be.

    A port the OS picks (binding port 0) comes from the ephemeral range, where
    outgoing connections take their local ports too: between this call and the
    listener's bind, any connection made on the machine may sit on it, and the
    listener then fails. Ports below that range are never handed to
    connections. A port is handed out once per process, so two calls for one
    topology never get the same port though neither is bound yet.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    low = _ephemeral_low()
    with _handed_lock:
        for _ in range(50):
            port = random.randrange(max(1024, low - 20_000), low)
            if port in _handed_out:
                continue
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                try:
                    probe.bind((host, port))
                except OSError:
                    continue
            _handed_out.add(port)
            return port
        with socket.socket(family, socket.SOCK_STREAM) as probe:  # a crowded range
            probe.bind((host, 0))
            chosen: int = probe.getsockname()[1]
        _handed_out.add(chosen)
        return chosen


def _ephemeral_low() -> int:
    """The first port of the range outgoing connections take theirs from."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def holder(host: str, port: int) -> str | None:
    """None when ``host:port`` is free to listen on, else who holds it (as well as known)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                return f"cannot be bound ({exc.strerror})"
        else:
            return None
    return _listener(port) or "another process"


def _listener(port: int) -> str | None:
    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, OSError):
        return None
    for conn in connections:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            if conn.pid is None:
                return "a process of another user"
            try:
                proc = psutil.Process(conn.pid)
                return f"pid {conn.pid} ({' '.join(proc.cmdline()[:4]) or proc.name()})"
            except psutil.Error:
                return f"pid {conn.pid}"
    return None


def taken_ports(wanted: list[tuple[str, int, str]]) -> list[str]:
    """For each ``(host, port, what)`` already held, a sentence saying so."""
    return [
        f"{what} port {port} on {host} is in use by {who}"
        for host, port, what in wanted
        if port and (who := holder(host, port)) is not None
    ]
