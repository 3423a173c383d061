"""Two messages, six results; and eval asking for three."""

import sys

from palm.clients import Client

BASE = int(sys.argv[1])

client = Client("server", f"tcp://127.0.0.1:{BASE + 4}")
for result in client.job("server.foo", [b"a", b"b"], messages=6):
    print(result.decode())
print("eval", sorted(r.decode() for r in client.eval("server.foo", b"c", messages=3)))
