"""The child process that runs map chunks inside an environment built for their spec.

``ENV/bin/python -m palm.ops.env_runner WORKER`` reads chunks from stdin,
each a 4-byte big-endian length and the chunk as the worker received it, and
writes each tagged answer back the same way on stdout. The secret comes in
``PALM_RUNNER_SECRET`` (hex). What user code prints goes to stderr: stdout
carries answers only. It ends when stdin closes (its worker stopped or died).
"""

from __future__ import annotations

import os
import sys
from typing import Any, BinaryIO

from palm.wire.shipping import run_chunk


def serve(inp: BinaryIO, out: BinaryIO, secret: bytes | None, worker: str) -> int:
    """Answer chunks from ``inp`` on ``out`` until ``inp`` ends."""
    functions: dict[bytes, Any] = {}
    while True:
        head = inp.read(4)
        if len(head) < 4:
            return 0
        payload = inp.read(int.from_bytes(head, "big"))
        answer = run_chunk(payload, secret, functions, worker=worker)
        out.write(len(answer).to_bytes(4, "big") + answer)
        out.flush()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    worker = args[0] if args else ""
    secret_hex = os.environ.pop("PALM_RUNNER_SECRET", "")
    secret = bytes.fromhex(secret_hex) if secret_hex else None
    channel = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # user code's prints go to stderr, never into the answers
    sys.stdout = sys.stderr
    with channel, os.fdopen(os.dup(0), "rb") as inp:
        return serve(inp, channel, secret, worker)


if __name__ == "__main__":
    sys.exit(main())
