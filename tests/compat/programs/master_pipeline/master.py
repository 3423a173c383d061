"""A pipelined master streaming into a pipeline."""

import sys

from palm.servers import Master

BASE = int(sys.argv[1])

server = Master(
    name="server",
    pull_address=f"tcp://127.0.0.1:{BASE}",
    pub_address=f"tcp://127.0.0.1:{BASE + 1}",
    worker_pull_address=f"tcp://127.0.0.1:{BASE + 2}",
    worker_push_address=f"tcp://127.0.0.1:{BASE + 3}",
    db_address=f"tcp://127.0.0.1:{BASE + 4}",
    pipelined=True,
)

if __name__ == "__main__":
    server.start()
