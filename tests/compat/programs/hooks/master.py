"""A master whose hooks fail on some messages: it must keep serving."""

import sys

from palm.servers import Master

BASE = int(sys.argv[1])


class Fragile(Master):
    def scatter(self, message):
        if message.payload == b"boom":
            raise ValueError("scatter cannot take boom")
        yield message

    def gather(self, message):
        if message.payload == b"CRASH":
            raise RuntimeError("gather cannot take CRASH")
        yield message

    def handle_stream(self, message):
        if message.payload == b"BAD":
            return b"not a topic", 42
        return None


server = Fragile(
    "server",
    f"tcp://127.0.0.1:{BASE}",
    f"tcp://127.0.0.1:{BASE + 1}",
    f"tcp://127.0.0.1:{BASE + 2}",
    f"tcp://127.0.0.1:{BASE + 3}",
    f"tcp://127.0.0.1:{BASE + 4}",
)

if __name__ == "__main__":
    server.start()
