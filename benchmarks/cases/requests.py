"""Request/reply latency of palm's standalone Server/Client and raw REQ/REP, measured in turn.

``--subjects raw,palm`` brings every named subject up at once (a raw pyzmq REP echo
server; palm's standalone echo Server) and makes ``--count`` sequential 100 B calls to
each per run, the subjects taking turns of 500 calls (the order reversed every other
run), so a slow spell of the shared machine falls on palm and raw REQ/REP alike
(before, each ran in a job of its own, a minute apart). Each subject gives its p50, p99
and rate rows.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack

from benchmarks.cases import palm_cases, raw_zmq
from benchmarks.cases.measure import Caller, latencies_in_turn, subject_keys
from benchmarks.record import emit

SUBJECTS: dict[str, Callable[[], AbstractContextManager[Caller]]] = {
    "raw": raw_zmq.reqrep_subject,
    "palm": palm_cases.request_subject,
}


def _keys(text: str) -> list[str]:
    return subject_keys(text, SUBJECTS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--subjects",
        type=_keys,
        default=list(SUBJECTS),
        help=f"comma-separated, among: {', '.join(SUBJECTS)} (default: all)",
    )
    parser.add_argument("--count", type=int, default=10_000, help="calls per subject per run")
    parser.add_argument("--runs", type=int, default=3, help="runs of each subject")
    args = parser.parse_args()
    with ExitStack() as stack:
        subjects = [stack.enter_context(SUBJECTS[key]()) for key in args.subjects]
        rows = latencies_in_turn(subjects, args.count, args.runs)
    emit(rows)


if __name__ == "__main__":
    main()
