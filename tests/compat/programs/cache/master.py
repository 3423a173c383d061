"""A master whose workers read what the client cached."""

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
)

if __name__ == "__main__":
    server.start()
