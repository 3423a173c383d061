"""A master that scatters every message into two jobs."""

import sys

from palm.servers import Master

BASE = int(sys.argv[1])


class MyMaster(Master):
    def scatter(self, message):
        for part in (b"left", b"right"):
            yield self.change_payload(message, message.payload + b" " + part)


server = MyMaster(
    name="server",
    pull_address=f"tcp://127.0.0.1:{BASE}",
    pub_address=f"tcp://127.0.0.1:{BASE + 1}",
    worker_pull_address=f"tcp://127.0.0.1:{BASE + 2}",
    worker_push_address=f"tcp://127.0.0.1:{BASE + 3}",
    db_address=f"tcp://127.0.0.1:{BASE + 4}",
)

if __name__ == "__main__":
    server.start()
