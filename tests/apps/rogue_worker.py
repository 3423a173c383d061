"""A rogue worker for tests: raw pyzmq speaking palm's worker protocol.

``python -m tests.apps.rogue_worker WORKER_PUSH WORKER_PULL MARKER`` registers
with a master (READY with credit), takes every job it is handed, and answers
each with a pickle whose ``__reduce__`` would create the file ``MARKER`` when
unpickled: untagged, with a made-up tag, or posing as a refusal, in turn. It
writes how many jobs it answered to ``MARKER.count`` after each one.
"""

from __future__ import annotations

import itertools
import os
import pickle
import sys
import uuid
from pathlib import Path
from typing import Any

import zmq

from palm.wire.protocol import Header, Kind, decode, frames_for, jobs_in


class Touch:
    """Unpickled, it creates ``path``: proof that a forged answer ran code."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (Path(self.path),))


def main(push_address: str, pull_address: str, marker: str) -> None:
    identity = uuid.uuid4().bytes
    context = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.IDENTITY, identity)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(push_address)
    results = context.socket(zmq.PUSH)
    results.setsockopt(zmq.LINGER, 0)
    results.connect(pull_address)
    extra = {"credit": 4, "pid": os.getpid(), "host": "rogue", "name": "rogue", "functions": []}
    dealer.send_multipart([Header(Kind.READY, 0, extra=extra).to_wire()])
    bomb = pickle.dumps(("ok", [Touch(marker)], 0.0))
    forms = itertools.cycle([bomb, b"\0" * 32 + bomb, b"palm-refused\0" + bomb])
    beat = Header(Kind.HEARTBEAT, 0, extra={"w": identity}).to_wire()
    answered = 0
    print('{"event": "ready"}', flush=True)
    while True:
        if not dealer.poll(100, zmq.POLLIN):
            results.send(beat)
            continue
        header, payloads = decode(dealer.recv_multipart())
        if header.kind != Kind.JOB:
            continue
        jobs = jobs_in(header, payloads)
        reply = header.reply()
        reply.extra = dict(header.extra or {}, w=identity)
        results.send_multipart([reply.to_wire(), *frames_for(reply, [next(forms) for _ in jobs])])
        answered += len(jobs)
        Path(marker + ".count").write_text(str(answered))


if __name__ == "__main__":
    main(*sys.argv[1:4])
