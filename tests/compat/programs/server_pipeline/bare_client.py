"""A client that names no sub_address for a pipelined server."""

import sys

from palm.clients import Client
from palm.errors import ConfigError

BASE = int(sys.argv[1])

try:
    Client("server", f"tcp://127.0.0.1:{BASE}")
except ConfigError as exc:
    print("refused:", exc)
else:
    print("accepted")
