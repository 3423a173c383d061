"""Twenty messages to the parallel master."""

import sys

from palm.clients import Client

BASE = int(sys.argv[1])

client = Client("server", f"tcp://127.0.0.1:{BASE + 4}")
for result in client.job("server.foo", (b"item %d" % i for i in range(20)), messages=20):
    print(result.decode())
