"""A parallel master, positional arguments in pylm's order."""

import sys

from palm.servers import Master

BASE = int(sys.argv[1])

server = Master(
    "server",
    f"tcp://127.0.0.1:{BASE}",
    f"tcp://127.0.0.1:{BASE + 1}",
    f"tcp://127.0.0.1:{BASE + 2}",
    f"tcp://127.0.0.1:{BASE + 3}",
    f"tcp://127.0.0.1:{BASE + 4}",
)

if __name__ == "__main__":
    server.start()
