"""A hub: a parallel server fed by the server's stream."""

import logging
import sys

from palm.servers import Hub

BASE = int(sys.argv[1])

server = Hub(
    "hub",
    f"tcp://127.0.0.1:{BASE + 2}",
    f"tcp://127.0.0.1:{BASE + 3}",
    f"tcp://127.0.0.1:{BASE + 4}",
    f"tcp://127.0.0.1:{BASE + 5}",
    f"tcp://127.0.0.1:{BASE + 6}",
    "server",
    log_level=logging.WARNING,
)

if __name__ == "__main__":
    server.start()
