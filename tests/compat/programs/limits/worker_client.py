"""Two messages for the master whose worker takes two."""

import sys

from palm.clients import Client

BASE = int(sys.argv[1])

client = Client("server", f"tcp://127.0.0.1:{BASE + 4}")
print(client.eval("server.foo", b"one").decode())
print(client.eval("server.foo", b"two").decode())
