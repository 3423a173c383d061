"""A worker that leaves after two messages."""

import logging
import sys

from palm.servers import Worker

BASE = int(sys.argv[1])


class MyWorker(Worker):
    def foo(self, message):
        return message.upper()


if __name__ == "__main__":
    MyWorker("short", f"tcp://127.0.0.1:{BASE + 4}", None, None, logging.WARNING, 2).start()
    print("worker done")
