"""A server whose handle_stream sends even numbers one way and odd ones the other."""

import sys

from palm.servers import Server

BASE = int(sys.argv[1])


class MyServer(Server):
    def foo(self, message):
        return message

    def handle_stream(self, message):
        if int(message.payload) % 2 == 0:
            return "even", self.change_payload(message, message.payload + b" is even")
        return "odd"


if __name__ == "__main__":
    MyServer(
        "server",
        f"tcp://127.0.0.1:{BASE}",
        f"tcp://127.0.0.1:{BASE + 1}",
        f"tcp://127.0.0.1:{BASE + 2}",
        pipelined=True,
    ).start()
