"""The two pipelines, one per topic: ``python pipelines.py BASE even|odd``."""

import sys

from palm.servers import Pipeline

BASE = int(sys.argv[1])
TOPIC = sys.argv[2]
OFFSET = {"even": 3, "odd": 5}[TOPIC]


class Branch(Pipeline):
    def foo(self, message):
        return message + b" via " + self.name.encode()


if __name__ == "__main__":
    Branch(
        TOPIC + "s",
        db_address=f"tcp://127.0.0.1:{BASE + OFFSET}",
        sub_address=f"tcp://127.0.0.1:{BASE + 2}",
        pub_address=f"tcp://127.0.0.1:{BASE + OFFSET + 1}",
        previous=TOPIC,
        to_client=False,
    ).start()
