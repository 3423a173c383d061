"""The pipeline after the master, back to the client."""

import sys

from palm.servers import Pipeline

BASE = int(sys.argv[1])


class MyPipeline(Pipeline):
    def foo(self, message):
        return message + b", then the pipeline"


if __name__ == "__main__":
    server = MyPipeline(
        "pipeline",
        db_address=f"tcp://127.0.0.1:{BASE + 5}",
        sub_address=f"tcp://127.0.0.1:{BASE + 1}",
        pub_address=f"tcp://127.0.0.1:{BASE + 6}",
        previous="server",
        to_client=True,
    )
    server.start()
