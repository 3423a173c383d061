"""The sink both pipelines stream into."""

import sys

from palm.servers import Sink

BASE = int(sys.argv[1])


class MySink(Sink):
    def foo(self, message):
        return message + b", sunk"


if __name__ == "__main__":
    MySink(
        "sink",
        db_address=f"tcp://127.0.0.1:{BASE + 7}",
        sub_addresses=[f"tcp://127.0.0.1:{BASE + 4}", f"tcp://127.0.0.1:{BASE + 6}"],
        pub_address=f"tcp://127.0.0.1:{BASE + 8}",
        previous=["evens", "odds"],
    ).start()
