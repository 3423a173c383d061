"""Stages, masters and workers the chain and pipeline tests run in real processes.

``python -m tests.apps.chain '{"class": "tests.apps.chain:Step1", "kwargs": {...}}'``
builds the object, prints a JSON ready line with its bound addresses and serves.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator

from palm import chained, servers
from palm.ops.loading import announce, load_object
from palm.serve.stream import Message


class Step1(chained.Server):
    def foo(self, message: bytes) -> bytes:
        return b"you sent me " + message


class Step2(chained.Server):
    def bar(self, message: bytes) -> bytes:
        if message.endswith(b"boom"):
            raise ValueError("step2 cannot take " + message.decode())
        return message + b" via step2"


class Last(chained.LastServer):
    def baz(self, message: bytes) -> bytes:
        return b"ACK: " + message


class StageWorker(servers.Worker):
    def bar(self, message: bytes) -> bytes:
        if message.endswith(b"boom"):
            raise ValueError("worker cannot take " + message.decode())
        return message + b" via step2"

    def part(self, message: bytes) -> bytes:
        return message.upper()

    def work(self, message: bytes) -> bytes:
        return message + b" worked"


class Splitter(servers.Master):
    """Scatters each message into 10 parts; gathers the 10 results into one."""

    def __init__(self, *args: object, gather: bool = True, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.join = gather
        self.parts: dict[tuple[bytes, int], list[bytes]] = {}

    def scatter(self, message: Message) -> Iterator[Message]:
        for i in range(10):
            yield Message(
                message.payload + b":" + str(i).encode(),
                message.function,
                message.client,
                message.id,
                message.stage,
                message.pipeline,
                extra=message.extra,
            )

    def gather(self, message: Message) -> Iterator[Message]:
        if not self.join:
            yield message
            return
        key = (message.client, message.id)
        parts = self.parts.setdefault(key, [])
        parts.append(message.payload)
        if len(parts) == 10:
            del self.parts[key]
            message.payload = b",".join(sorted(parts))
            yield message


class Source(servers.Server):
    def prep(self, message: bytes) -> bytes:
        return b"prepped " + message


class Branch(servers.Pipeline):
    def tag(self, message: bytes) -> bytes:
        return self.name.encode() + b":" + message


class Collect(servers.Sink):
    def collect(self, message: bytes) -> bytes:
        return message + b" collected"


def main() -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    spec = json.loads(sys.argv[1])
    cls = load_object(spec["class"])
    server = cls(**spec["kwargs"])

    def ready(s: object) -> None:
        announce("ready", name=getattr(s, "name", ""), addresses=dict(getattr(s, "bound", {})))

    server.on_ready = ready
    server.start()
    return 0


if __name__ == "__main__":
    sys.exit(main())
