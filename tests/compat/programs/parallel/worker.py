"""A worker of the parallel master; only the master's db address is needed."""

import logging
import sys

from palm.servers import Worker

BASE = int(sys.argv[1])


class MyWorker(Worker):
    def foo(self, message):
        return self.name.encode("utf-8") + b" processed " + message


if __name__ == "__main__":
    server = MyWorker(sys.argv[2], f"tcp://127.0.0.1:{BASE + 4}", log_level=logging.WARNING)
    server.start()
