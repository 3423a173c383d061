"""Whether a TCP port is free to listen on, and who holds it when it is not.

A process that listens with ``SO_REUSEPORT`` (Envoy does) lets another such
process listen on the same port, and connections then split between the two
at random. :func:`holder` binds without that option, so it finds every
listener, and names the process when this user may see it.
"""

from __future__ import annotations

import errno
import socket

import psutil

__all__ = ["holder", "taken_ports"]


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
