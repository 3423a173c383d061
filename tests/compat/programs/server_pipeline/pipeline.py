"""A pipeline after a pipelined server, positional arguments."""

import sys

from palm.servers import Pipeline

BASE = int(sys.argv[1])


class MyPipeline(Pipeline):
    def foo(self, message):
        return message + b", then the pipeline"


if __name__ == "__main__":
    MyPipeline(
        "pipeline",
        f"tcp://127.0.0.1:{BASE + 3}",
        f"tcp://127.0.0.1:{BASE + 2}",
        f"tcp://127.0.0.1:{BASE + 4}",
        "server",
    ).start()
