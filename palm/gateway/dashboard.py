"""The live web dashboard: ``/dashboard`` on the gateway (through Envoy) or ``palm dashboard``.

Routes
------
``GET /dashboard``
    The page (HTML, with its script and style under ``/dashboard/static/``;
    no build step, no CDN). It holds no data, so it is served without an API
    key (:data:`palm.gateway.auth.OPEN_PATHS`); the page asks for the key (or
    takes it from the address's fragment, ``/dashboard#key=<key>``, which never
    reaches a server) and sends it as ``Authorization: Bearer`` with every poll.
``GET /dashboard/api/snapshot``
    One JSON picture of the deployment: its services, every live server
    (masters and standalone servers, with host and pid), their workers
    (alive, busy, jobs done, host, pid), per function the jobs in, out,
    failed, in flight and the p50/p95/p99 latency of the recent window, the
    backlog, the recent errors and warnings, and the tail of the central
    logs. The page polls it every second and draws throughput (from the
    difference of successive ``out`` counts), latency, backlog and in-flight
    as live charts.

The data comes from Redis: the counters every palm server publishes
(:mod:`palm.state.counters`) and the central logs (:mod:`palm.state.logs`).
:class:`SnapshotSource` reads them (at most once per ``min_interval_s`` per
process, whatever the number of open pages). :func:`register` adds the routes
to a Flask app: the gateway's, or the standalone one :func:`create_dashboard_app`
builds for ``palm dashboard``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify, send_from_directory

from palm.errors import StateError
from palm.state.counters import read_stats
from palm.state.logs import read_logs
from palm.state.store import State

__all__ = [
    "STATIC_DIR",
    "SnapshotSource",
    "create_dashboard_app",
    "register",
    "snapshot",
]

#: The page and its files (package data).
STATIC_DIR = Path(__file__).resolve().parent / "static" / "dashboard"

_LOG_FIELDS = ("time", "level", "server", "worker", "host", "pid", "message", "request_id")
_MAX_MESSAGE = 2000
_ERROR_LEVELS = frozenset({"WARNING", "ERROR", "CRITICAL"})


def _record(record: Mapping[str, Any]) -> dict[str, Any]:
    out = {key: record.get(key, "") for key in _LOG_FIELDS}
    message = str(out["message"])
    if len(message) > _MAX_MESSAGE:
        out["message"] = message[:_MAX_MESSAGE] + " ..."
    return out


def _ms(value: Any) -> float:
    try:
        return round(float(value) * 1000, 3)
    except (TypeError, ValueError):
        return 0.0


def _server(name: str, snap: Mapping[str, Any]) -> dict[str, Any]:
    functions = [
        {
            "name": function,
            "in": int(f.get("in", 0)),
            "out": int(f.get("out", 0)),
            "failed": int(f.get("failed", 0)),
            "in_flight": int(f.get("in_flight", 0)),
            "p50_ms": _ms(f.get("p50_s")),
            "p95_ms": _ms(f.get("p95_s")),
            "p99_ms": _ms(f.get("p99_s")),
        }
        for function, f in sorted(snap.get("functions", {}).items())
    ]
    workers = [
        {
            "id": worker,
            "alive": bool(w.get("alive")),
            "busy": int(w.get("busy", 0)),
            "jobs_done": int(w.get("jobs_done", 0)),
            "host": str(w.get("host", "")),
            "pid": int(w.get("pid", 0)),
            "last_seen": float(w.get("last_seen", 0.0)),
        }
        for worker, w in sorted(snap.get("workers", {}).items())
    ]
    return {
        "name": name,
        "kind": "master" if workers else "server",
        "host": str(snap.get("host", "")),
        "pid": int(snap.get("pid", 0)),
        "started_at": float(snap.get("started_at", 0.0)),
        "time": float(snap.get("time", 0.0)),
        "backlog": int(snap.get("backlog", 0)),
        "in": int(snap.get("in", 0)),
        "out": int(snap.get("out", 0)),
        "failed": int(snap.get("failed", 0)),
        "in_flight": int(snap.get("in_flight", 0)),
        "functions": functions,
        "workers": workers,
    }


def snapshot(
    state: State,
    services: Mapping[str, str] | None = None,
    *,
    logs: int = 40,
    errors: int = 15,
    scan: int = 300,
) -> dict[str, Any]:
    """The dashboard's JSON picture of the deployment behind ``state``.

    ``services`` maps service names to their kind (the gateway knows them;
    without it the servers that publish counters are the services). The
    newest ``scan`` log records of each server are read, whatever the size of
    the logs: ``logs`` of them are the tail, the newest ``errors`` warnings
    and errors among them the recent errors. A Redis failure is reported in
    ``"problem"`` with empty lists, never raised.
    """
    problem = ""
    stats: dict[str, dict[str, Any]] = {}
    tail: list[dict[str, Any]] = []
    recent_errors: list[dict[str, Any]] = []
    try:
        stats = read_stats(state)
        records = list(read_logs(state, limit=scan))
        tail = [_record(r) for r in records[-logs:]]
        recent_errors = [_record(r) for r in records if r.get("level") in _ERROR_LEVELS][-errors:]
    except (StateError, ValueError) as exc:
        problem = str(exc)
    servers = [_server(name, snap) for name, snap in sorted(stats.items())]
    known = dict(services) if services is not None else {s["name"]: s["kind"] for s in servers}
    live = {s["name"] for s in servers}
    workers = [w for s in servers for w in s["workers"]]
    return {
        "time": time.time(),
        "cluster": state.cluster,
        "problem": problem,
        "services": [
            {"name": name, "kind": kind, "live": name in live}
            for name, kind in sorted(known.items())
        ],
        "servers": servers,
        "totals": {
            "in": sum(s["in"] for s in servers),
            "out": sum(s["out"] for s in servers),
            "failed": sum(s["failed"] for s in servers),
            "in_flight": sum(s["in_flight"] for s in servers),
            "backlog": sum(s["backlog"] for s in servers),
            "workers": len(workers),
            "workers_alive": sum(1 for w in workers if w["alive"]),
            "workers_busy": sum(1 for w in workers if w["alive"] and w["busy"]),
        },
        "errors": list(reversed(recent_errors)),
        "logs": list(reversed(tail)),
    }


class SnapshotSource:
    """Snapshots of one deployment, read at most once per ``min_interval_s``."""

    def __init__(
        self,
        redis_url: str,
        cluster: str,
        services: Mapping[str, str] | None = None,
        *,
        min_interval_s: float = 0.5,
    ) -> None:
        self.redis_url = redis_url
        self.cluster = cluster
        self.services = dict(services) if services is not None else None
        self.min_interval_s = min_interval_s
        self._lock = threading.Lock()
        self._state: State | None = None
        self._latest: tuple[float, dict[str, Any]] | None = None

    def get(self) -> dict[str, Any]:
        with self._lock:
            now = time.monotonic()
            if self._latest is not None and now - self._latest[0] < self.min_interval_s:
                return self._latest[1]
            if self._state is None:
                self._state = State(self.redis_url, self.cluster)
            taken = snapshot(self._state, self.services)
            self._latest = (now, taken)
            return taken

    def close(self) -> None:
        with self._lock:
            if self._state is not None:
                self._state.close()
                self._state = None


def register(app: Flask, source: SnapshotSource | None) -> None:
    """Add the dashboard's routes to ``app`` (``source`` None: the API answers 503)."""

    def page() -> Response:
        response = send_from_directory(STATIC_DIR, "index.html", max_age=0)
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data:; style-src 'self'; "
            "script-src 'self'; connect-src 'self'; frame-ancestors 'none'"
        )
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    def static_file(name: str) -> Response:
        response = send_from_directory(STATIC_DIR, name, max_age=300)
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    def api_snapshot() -> Response:
        if source is None:
            response = jsonify(
                {
                    "error": "no state",
                    "detail": "the gateway has no redis_url: no counters or logs to show",
                }
            )
            response.status_code = 503
        else:
            response = jsonify(source.get())
        response.headers["Cache-Control"] = "no-store"
        return response

    app.add_url_rule("/dashboard", "dashboard_page", page, methods=["GET"])
    app.add_url_rule("/dashboard/", "dashboard_page_slash", page, methods=["GET"])
    app.add_url_rule(
        "/dashboard/static/<path:name>", "dashboard_static", static_file, methods=["GET"]
    )
    app.add_url_rule("/dashboard/api/snapshot", "dashboard_snapshot", api_snapshot, methods=["GET"])


def create_dashboard_app(redis_url: str, cluster: str) -> Flask:
    """The dashboard alone (``palm dashboard``), for a deployment without the edge.

    It serves whoever reaches it, without API keys: bind it to loopback.
    """
    app = Flask("palm.dashboard")
    source = SnapshotSource(redis_url, cluster)
    register(app, source)
    app.extensions["palm_dashboard"] = source

    @app.get("/")
    def root() -> Response:
        response = Response(status=302)
        response.headers["Location"] = "/dashboard"
        return response

    return app
