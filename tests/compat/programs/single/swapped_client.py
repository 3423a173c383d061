"""The addresses the wrong way round: palm's old meaning of push_address."""

import sys

from palm.clients import Client
from palm.errors import ConfigError

BASE = int(sys.argv[1])

try:
    Client("my_server", f"tcp://127.0.0.1:{BASE}", push_address=f"tcp://127.0.0.1:{BASE + 2}")
except ConfigError as exc:
    print("refused:", exc)
else:
    print("accepted")
