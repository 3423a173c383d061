"""Three messages through the tee: one of them skipped by one branch."""

import sys

from palm.clients import Client

BASE = int(sys.argv[1])

client = Client("server", f"tcp://127.0.0.1:{BASE}", sub_address=f"tcp://127.0.0.1:{BASE + 8}")
route = ["server.foo", "keep.foo", "drop.foo", "sink.foo"]
for result in client.job(route, [b"one", b"skip two", b"three"], messages=5):
    print(result.decode())
