"""Three messages in, six results out."""

import sys

from palm.clients import Client

BASE = int(sys.argv[1])

client = Client("server", f"tcp://127.0.0.1:{BASE + 4}")
for result in client.job("server.foo", [b"a", b"b", b"c"], messages=6):
    print(result.decode())
