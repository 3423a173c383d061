"""A pipelined server whose stream two pipelines take (a tee).

``subscribers=2`` is palm's: the stream waits for both pipelines, so neither
misses the first messages (pylm's PUB socket dropped them).
"""

import logging
import sys

from palm.servers import Server

BASE = int(sys.argv[1])


class MyServer(Server):
    def foo(self, message):
        return message


if __name__ == "__main__":
    server = MyServer(
        "server",
        f"tcp://127.0.0.1:{BASE}",
        f"tcp://127.0.0.1:{BASE + 1}",
        f"tcp://127.0.0.1:{BASE + 2}",
        pipelined=True,
        log_level=logging.WARNING,
        subscribers=2,
    )
    server.start()
