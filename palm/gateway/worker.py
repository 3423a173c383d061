"""palm's gunicorn worker class for the gateway (``--worker-class palm.gateway.worker.EdgeWorker``).

gunicorn stays the process manager (the arbiter forks, watches and restarts
the workers, and owns the listening socket); each worker runs uvicorn's event
loop (uvloop, the httptools parser) serving :func:`palm.gateway.asgi.create_asgi_app`.
Keep-alive follows gunicorn's ``--keep-alive``; uvicorn's own access log and
``server`` header are off (the gateway logs and counts requests itself), and
so is its proxy-headers middleware (behind Envoy the gateway reads no client
address).
"""

from __future__ import annotations

from typing import Any

from uvicorn_worker import UvicornWorker

__all__ = ["EdgeWorker"]


class EdgeWorker(UvicornWorker):  # type: ignore[misc]
    CONFIG_KWARGS: dict[str, Any] = {
        "loop": "auto",  # uvloop when installed
        "http": "auto",  # httptools when installed
        "lifespan": "on",
        "access_log": False,
        "server_header": False,
        "proxy_headers": False,
    }
