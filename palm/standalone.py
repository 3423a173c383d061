"""The standalone topology: servers and masters that talk to clients directly.

``Server``/``Client`` are a single-process server and its client;
``Master``/``Worker``/``ParallelClient`` are the parallel flavour, a master
fanning jobs out to a pool of worker processes.
"""

from palm.call.parallel import ParallelClient
from palm.call.request import Client
from palm.serve.master import Master
from palm.serve.server import Server
from palm.serve.worker import FunctionWorker, Worker

__all__ = ["Client", "FunctionWorker", "Master", "ParallelClient", "Server", "Worker"]
