"""A client that names both addresses, as pylm's did: push to the input, hear the pub."""

import sys

from palm.clients import Client

BASE = int(sys.argv[1])

client = Client(
    "my_server",
    f"tcp://127.0.0.1:{BASE}",
    push_address=f"tcp://127.0.0.1:{BASE + 1}",
    sub_address=f"tcp://127.0.0.1:{BASE + 2}",
)
print(client.eval("my_server.foo", b"explicit").decode())
