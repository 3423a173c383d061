"""An in-process test kit: palm's engines driven in one process, no processes spawned.

Masters, workers and servers run in threads of the test process on fresh
``inproc://`` endpoints of the process's one ZeroMQ context; nothing starts
Redis (they run with ``redis_url=False``). Every harness is a context manager
that stops, joins and closes everything it started on exit, even when the
test failed.

* :class:`LocalMaster` runs a :class:`~palm.serve.master.Master` with short
  heartbeats. ``add_worker(cls)`` runs real workers in threads,
  ``stub_worker('foo', credit=2)`` gives a :class:`StubWorker` the test drives
  by hand (answer, answer twice, answer late, die, leave), ``client()`` a
  connected :class:`~palm.call.parallel.ParallelClient`, ``wire_client()`` a
  :class:`WireClient` that shows every result message the master sends, and
  ``info()``/``stats()``/``workers()`` what the master says about itself.
  ``restart()`` replaces the master on the same endpoints (``transport='ipc'``).
* :class:`LocalServer` runs a standalone :class:`~palm.serve.server.Server`;
  ``client()`` gives a :class:`~palm.call.request.Client`, ``peer()`` a
  :class:`RawPeer` for frames of any shape.
* :func:`wait_until` polls a condition against a deadline, and ``spawn()`` of
  either harness runs a blocking call in a thread and returns its Future.

Example::

    from palm.standalone import Worker
    from palm.testing import LocalMaster

    class Echo(Worker):
        def echo(self, message: bytes) -> bytes:
            return message

    def test_a_dead_workers_jobs_go_to_another() -> None:
        with LocalMaster(heartbeat_interval_s=0.05) as cluster:
            stub = cluster.stub_worker("echo", credit=2)
            client = cluster.client(batch=1)
            call = cluster.spawn(lambda: sorted(client.job("echo", [b"a", b"b"])))
            stub.jobs(2)  # the stub holds both jobs...
            stub.die()  # ...and falls silent
            cluster.wait_for_worker_gone(stub.name)
            cluster.add_worker(Echo)
            assert call.result(timeout=2) == [b"a", b"b"]
            assert cluster.stats()["requeued"] == 2
"""

from palm.testing._harness import Transport, wait_until
from palm.testing.master import LocalMaster, MasterEndpoints
from palm.testing.server import LocalServer
from palm.testing.stub import StubJob, StubWorker
from palm.testing.wire import RawPeer, WireClient, WireResult, answers

__all__ = [
    "LocalMaster",
    "LocalServer",
    "MasterEndpoints",
    "RawPeer",
    "StubJob",
    "StubWorker",
    "Transport",
    "WireClient",
    "WireResult",
    "answers",
    "wait_until",
]
