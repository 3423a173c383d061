"""The trivial apps the HTTP benchmark puts behind Envoy: a small JSON answer, as WSGI
(``app``, for sync workers) and ASGI (``asgi_app``, for the uvicorn worker class)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

_BODY = b'{"ok": true}'


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(_BODY)))]
    )
    return [_BODY]


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The same answer as an ASGI app, for gunicorn with palm's uvicorn worker class."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    while True:  # read the request body through
        message = await receive()
        if not message.get("more_body"):
            break
    await send({
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(_BODY)).encode())],
    })  # fmt: skip
    await send({"type": "http.response.body", "body": _BODY})
