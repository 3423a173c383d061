"""The sink joining both branches of the tee."""

import logging
import sys

from palm.servers import Sink

BASE = int(sys.argv[1])


class MySink(Sink):
    def foo(self, message):
        return message + b" (sunk)"


if __name__ == "__main__":
    MySink(
        "sink",
        f"tcp://127.0.0.1:{BASE + 7}",
        [f"tcp://127.0.0.1:{BASE + 4}", f"tcp://127.0.0.1:{BASE + 6}"],
        f"tcp://127.0.0.1:{BASE + 8}",
        ["keep", "drop"],
        log_level=logging.WARNING,
    ).start()
