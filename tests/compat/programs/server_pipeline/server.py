"""A pipelined server streaming into a hub."""

import sys

from palm.servers import Server

BASE = int(sys.argv[1])


class MyServer(Server):
    def foo(self, message):
        return b"server saw " + message


if __name__ == "__main__":
    server = MyServer(
        "server",
        db_address=f"tcp://127.0.0.1:{BASE}",
        pull_address=f"tcp://127.0.0.1:{BASE + 1}",
        pub_address=f"tcp://127.0.0.1:{BASE + 2}",
        pipelined=True,
    )
    server.start()
