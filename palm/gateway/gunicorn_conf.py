"""gunicorn settings for the gateway (``--config python:palm.gateway.gunicorn_conf``).

The gateway process is an application, so this is where its logging is set up:
records carry the request's ``x-request-id`` (``[request_id]`` in the format).
Each worker dies with gunicorn's master, even one killed with SIGKILL (uvicorn's
workers do not watch their parent): :func:`post_fork`.
"""

from __future__ import annotations

from typing import Any

from palm.ops.processes import set_death_signal


def post_fork(server: Any, worker: Any) -> None:
    """In a new worker: SIGTERM it when the master dies (Linux)."""
    set_death_signal(server.pid)


logconfig_dict: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "palm.gateway.app.RequestIdFilter"}},
    "formatters": {
        "palm": {
            "format": "%(asctime)s %(process)d %(levelname)s %(name)s [%(request_id)s] %(message)s"
        }
    },
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "formatter": "palm",
            "filters": ["request_id"],
            "stream": "ext://sys.stderr",
        },
        # gunicorn's own defaults refer to these two names.
        "console": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout"},
        "error_console": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"},
    },
    "root": {"level": "WARNING", "handlers": ["stderr"]},
    "loggers": {
        "gateway": {"level": "INFO", "handlers": ["stderr"], "propagate": False},
        "palm": {"level": "WARNING", "handlers": ["stderr"], "propagate": False},
        "gunicorn.error": {"level": "WARNING", "handlers": ["stderr"], "propagate": False},
    },
}
