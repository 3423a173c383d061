"""A master that gathers every four results into one, with change_payload."""

import logging
import sys

from palm.servers import Master

BASE = int(sys.argv[1])


class MyMaster(Master):
    def __init__(self, *args, **kwargs):
        self.collected = []
        super().__init__(*args, **kwargs)

    def gather(self, message):
        self.collected.append(message.payload)
        if len(self.collected) == 4:
            total = b"+".join(sorted(self.collected))
            self.collected = []
            yield self.change_payload(message, total)


server = MyMaster(
    name="server",
    pull_address=f"tcp://127.0.0.1:{BASE}",
    pub_address=f"tcp://127.0.0.1:{BASE + 1}",
    worker_pull_address=f"tcp://127.0.0.1:{BASE + 2}",
    worker_push_address=f"tcp://127.0.0.1:{BASE + 3}",
    db_address=f"tcp://127.0.0.1:{BASE + 4}",
    log_level=logging.DEBUG,
)

if __name__ == "__main__":
    server.start()
