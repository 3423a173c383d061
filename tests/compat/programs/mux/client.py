"""Two messages, six results; and eval asking for three."""

import sys

from palm.clients import Client

BASE = int(sys.argv[1])

client = Client("server", f"tcp://127.0.0.1:{BASE + 4}")
for result in client.job("server.foo", [b"a", b"b"], messages=6):
    print(result.decode())
print("eval", sorted(r.decode() for r in client.eval("server.foo", b"c", messages=3)))
one_by_one = Client("server", f"tcp://127.0.0.1:{BASE + 4}", batch=1)  # a job per message
results = one_by_one.job("server.foo", [b"d", b"e"])
print("until the end", sorted(r.decode() for r in results))
