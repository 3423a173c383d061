"""A MuxWorker: each message gives three results."""

import logging
import sys

from palm.servers import MuxWorker

BASE = int(sys.argv[1])


class MyWorker(MuxWorker):
    def foo(self, message):
        for i in range(3):
            yield message + b" #%d" % i


if __name__ == "__main__":
    MyWorker(sys.argv[2], f"tcp://127.0.0.1:{BASE + 4}", log_level=logging.WARNING).start()
