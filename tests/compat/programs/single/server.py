"""A single server in the style of pylm 0.14's documentation."""

import logging
import sys

from palm.servers import Server

BASE = int(sys.argv[1])


class MyServer(Server):
    def foo(self, message):
        self.logger.debug("Got a message")
        return b"you sent me " + message


if __name__ == "__main__":
    server = MyServer(
        "my_server",
        db_address=f"tcp://127.0.0.1:{BASE}",
        pull_address=f"tcp://127.0.0.1:{BASE + 1}",
        pub_address=f"tcp://127.0.0.1:{BASE + 2}",
        pipelined=False,
        log_level=logging.DEBUG,
    )
    server.start()
