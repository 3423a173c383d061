"""A parallel master with a message limit of its own: ``python -m tests.apps.small_master LIMIT``.

``palm master`` keeps the default limit; the size tests need a small one on a
real master process. It binds every endpoint on a port the OS picks and
prints palm's JSON ready line.
"""

from __future__ import annotations

import sys

from palm.ops.loading import announce
from palm.serve.master import Master

__all__ = ["main"]


def main() -> None:
    """Run the master until it is signalled."""
    any_port = "tcp://127.0.0.1:*"
    master = Master(
        "small",
        any_port,
        any_port,
        any_port,
        any_port,
        any_port,
        max_message_bytes=int(sys.argv[1]),
        redis_url=False,
    )
    master.on_ready = lambda m: announce("ready", kind="master", name=m.name, **m.bound)
    master.start()


if __name__ == "__main__":
    main()
