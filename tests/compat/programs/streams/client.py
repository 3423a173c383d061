"""Six numbers, sorted by the server's handle_stream into two pipelines and a sink."""

import sys

from palm.clients import Client

BASE = int(sys.argv[1])

client = Client("server", f"tcp://127.0.0.1:{BASE}", sub_address=f"tcp://127.0.0.1:{BASE + 8}")
route = ["server.foo", "evens.foo", "odds.foo", "sink.foo"]
for result in client.job(route, [b"%d" % i for i in range(6)], messages=6):
    print(result.decode())
