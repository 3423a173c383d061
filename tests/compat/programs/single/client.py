"""The client of the single server: a job of ten messages, then one eval."""

import logging
import sys

from palm.clients import Client

BASE = int(sys.argv[1])

client = Client("my_server", f"tcp://127.0.0.1:{BASE}", logging_level=logging.WARNING)
for number, result in enumerate(client.job("my_server.foo", [b"a message"] * 10, messages=10)):
    print(number, result.decode())
print("eval", client.eval("my_server.foo", b"only one").decode())
print("twice", client.eval(["my_server.foo"], b"listed").decode())
