"""A payload per failing hook, each answered as an error; then a good one."""

import sys

from palm.clients import Client
from palm.errors import RemoteError

BASE = int(sys.argv[1])

client = Client("server", f"tcp://127.0.0.1:{BASE + 4}", timeout_s=20)
for payload in (b"bad", b"boom", b"crash"):
    try:
        print("answered", client.eval("server.foo", payload))
    except RemoteError as exc:
        print("error", payload.decode(), type(exc).__name__, exc.remote_message)
print("next", client.eval("server.foo", b"fine").decode())
