"""Request bodies the gateway refuses: read and dropped, so the connection stays usable."""

from __future__ import annotations

from typing import Any

__all__ = ["discard_body"]


def discard_body(environ: dict[str, Any], limit: int) -> None:
    """Read and drop the body of a request refused unread, up to ``limit`` bytes.

    A server keeping the connection alive must get past the body before the
    next request; some (gunicorn's threaded workers) close the connection
    instead when the body is large, after the proxy in front has been told it
    stays open, and the proxy's next request on it fails.
    """
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return
    if length <= 0 or length > limit:
        return
    stream = environ["wsgi.input"]
    while length > 0:
        chunk = stream.read(min(length, 256 * 1024))
        if not chunk:
            return
        length -= len(chunk)
