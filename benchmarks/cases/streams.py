"""Stream throughput of palm and the raw pyzmq brokers, measured in turn.

``--subjects palm,raw-batched,...`` brings every named subject up at once (palm's master
and 2 echo workers, each raw broker with its 2 echo workers, the one-way sink) and streams
``--count`` messages of ``--payload-bytes`` through each, run by run in turn, so a slow
spell of the shared machine falls on palm and its peers alike (before, each ran in a job
of its own, a minute apart). The subjects:

- ``palm``: ParallelClient.job -> Master -> 2 workers echoing bytes (large payloads reach
  the workers through the client's shared-memory arena, as on any one machine);
- ``palm-view``: the same, the workers' echo taking a memoryview (``@zero_copy``);
- ``palm-inline``: ``palm`` with ``shared_memory=False``: every payload through the
  sockets at every hop, as between machines;
- ``raw``, ``raw-copy``, ``raw-batched``, ``raw-oneway``: the raw pyzmq variants of
  :mod:`benchmarks.cases.raw_zmq`.

Each subject gives its msg/s row and CPU microseconds per message of each process.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack

from benchmarks.cases import palm_cases, raw_zmq
from benchmarks.cases.measure import PAYLOAD, Subject, streams_in_turn, subject_keys
from benchmarks.record import emit

_RAW = {key: variant for variant, (key, _) in raw_zmq.VARIANTS.items()}
_PALM = {key: handler for handler, (key, _) in palm_cases.HANDLERS.items()}
SUBJECTS = (*_PALM, *_RAW)


def _subject(key: str) -> Callable[[bytes], AbstractContextManager[Subject]]:
    if key in _PALM:
        return lambda payload: palm_cases.stream_subject(_PALM[key], payload)
    return lambda payload: raw_zmq.stream_subject(_RAW[key], payload)


def throughput(keys: list[str], count: int, runs: int, payload_bytes: int) -> None:
    payload = PAYLOAD if payload_bytes == len(PAYLOAD) else b"x" * payload_bytes
    params: dict[str, object] = {} if payload_bytes == len(PAYLOAD) else {"payload": payload_bytes}
    with ExitStack() as stack:
        subjects = [stack.enter_context(_subject(key)(payload)) for key in keys]
        rows = streams_in_turn("throughput", subjects, count, runs, params)
    emit(rows)


def _keys(text: str) -> list[str]:
    return subject_keys(text, SUBJECTS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subjects", type=_keys, required=True,
                        help=f"comma-separated, among: {', '.join(SUBJECTS)}")  # fmt: skip
    parser.add_argument("--count", type=int, default=100_000, help="messages per run")
    parser.add_argument("--runs", type=int, default=3, help="runs of each subject")
    parser.add_argument("--payload-bytes", type=int, default=len(PAYLOAD))
    args = parser.parse_args()
    throughput(args.subjects, args.count, args.runs, args.payload_bytes)


if __name__ == "__main__":
    main()
