"""The other branch of the tee: returns None (delivers nothing) for some messages."""

import logging
import sys

from palm.servers import Pipeline

BASE = int(sys.argv[1])


class Drop(Pipeline):
    def foo(self, message):
        if message.startswith(b"skip"):
            return None
        return b"passed " + message


if __name__ == "__main__":
    Drop(
        "drop",
        f"tcp://127.0.0.1:{BASE + 5}",
        f"tcp://127.0.0.1:{BASE + 2}",
        f"tcp://127.0.0.1:{BASE + 6}",
        "server",
        to_client=False,
        log_level=logging.WARNING,
    ).start()
