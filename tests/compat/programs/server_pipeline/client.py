"""Jobs into the server, results from the pipeline, by a pylm-style client."""

import sys

from palm.clients import Client

BASE = int(sys.argv[1])

client = Client(
    "server",
    f"tcp://127.0.0.1:{BASE}",
    f"tcp://127.0.0.1:{BASE + 1}",
    f"tcp://127.0.0.1:{BASE + 4}",
)
for result in client.job(["server.foo", "pipeline.foo"], [b"x", b"y"], messages=2):
    print(result.decode())
print("eval", client.eval(["server.foo", "pipeline.foo"], b"z").decode())
