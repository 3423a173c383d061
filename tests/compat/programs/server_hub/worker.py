"""The hub's worker."""

import sys

from palm.servers import Worker

BASE = int(sys.argv[1])


class MyWorker(Worker):
    def foo(self, message):
        return message + b", then a hub worker"


if __name__ == "__main__":
    MyWorker(sys.argv[2], f"tcp://127.0.0.1:{BASE + 6}").start()
