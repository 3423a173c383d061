"""Set a value, read it back, and let the workers use it."""

import sys

from palm.clients import Client

BASE = int(sys.argv[1])

client = Client("server", f"tcp://127.0.0.1:{BASE + 4}")
print("key", client.set(b"from the cache", "cached"))
print("get", client.get("cached").decode())
for result in client.job("server.foo", [b"a message"] * 3, messages=3):
    print(result.decode())
