"""Jobs into the server, results from the hub."""

import sys

from palm.clients import Client

BASE = int(sys.argv[1])

client = Client("server", f"tcp://127.0.0.1:{BASE}", sub_address=f"tcp://127.0.0.1:{BASE + 3}")
for result in client.job(["server.foo", "hub.foo"], [b"1", b"2", b"3"], messages=3):
    print(result.decode())
