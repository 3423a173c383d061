"""A server that stops after three messages; logging left to palm (INFO on stdout)."""

import logging
import sys

from palm.servers import Server

BASE = int(sys.argv[1])


class MyServer(Server):
    def foo(self, message):
        self.logger.info("handling %s", message.decode())
        return message[::-1]


if __name__ == "__main__":
    server = MyServer(
        "limited",
        f"tcp://127.0.0.1:{BASE}",
        f"tcp://127.0.0.1:{BASE + 1}",
        f"tcp://127.0.0.1:{BASE + 2}",
        False,
        logging.INFO,
        3,
    )
    server.start(cache_messages=100)
    print("server done")
