"""One branch of the tee: keeps everything."""

import logging
import sys

from palm.servers import Pipeline

BASE = int(sys.argv[1])


class Keep(Pipeline):
    def foo(self, message):
        return b"kept " + message


if __name__ == "__main__":
    Keep(
        "keep",
        f"tcp://127.0.0.1:{BASE + 3}",
        f"tcp://127.0.0.1:{BASE + 2}",
        f"tcp://127.0.0.1:{BASE + 4}",
        "server",
        to_client=False,
        log_level=logging.WARNING,
    ).start()
