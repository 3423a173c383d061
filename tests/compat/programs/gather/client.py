"""Eight messages in, two gathered results out."""

import sys

from palm.clients import Client

BASE = int(sys.argv[1])

client = Client("server", f"tcp://127.0.0.1:{BASE + 4}")
for result in client.job("server.foo", [b"%d" % i for i in range(8)], messages=2):
    print(result.decode())
