"""Three messages for the limited server."""

import sys

from palm.clients import Client

BASE = int(sys.argv[1])

client = Client("limited", f"tcp://127.0.0.1:{BASE}")
for result in client.job("limited.foo", [b"abc", b"def", b"ghi"], messages=3):
    print(result.decode())
