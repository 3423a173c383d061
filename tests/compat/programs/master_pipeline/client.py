"""Jobs into the master, results from the pipeline; the route as a list."""

import sys

from palm.clients import Client

BASE = int(sys.argv[1])

client = Client(
    "server",
    f"tcp://127.0.0.1:{BASE + 4}",
    sub_address=f"tcp://127.0.0.1:{BASE + 6}",
)
for result in client.job(["server.foo", "pipeline.foo"], [b"a", b"b", b"c", b"d"], messages=4):
    print(result.decode())
