"""Static pages a service brings along: ``GET /<service>/`` and its files.

A service of the deployment file may name a directory of static files with
``page: package.module:directory`` (the directory beside that module, found
without reading the working directory). The gateway then answers
``GET /<service>/`` with its ``index.html`` and ``GET /<service>/<file>`` with
the other files of that directory (no subdirectories, no other names), ahead
of the API key check: a page is public, the calls its script makes are not
(the page reads the key from the URL fragment ``#key=...``, which no browser
sends to a server). Everything else passes through to the gateway's routes.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from palm.errors import ConfigError
from palm.gateway.auth import StartResponse, WSGIApp

__all__ = ["CONTENT_TYPES", "PageMount", "resolve_page"]

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".json": "application/json",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
}
FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*\.[a-z]{2,4}")
HEADERS = [
    ("Cache-Control", "no-cache"),
    ("X-Content-Type-Options", "nosniff"),
    ("Content-Security-Policy", "default-src 'self'; img-src 'self' data:"),
]


def resolve_page(spec: str) -> Path:
    """The directory ``package.module:directory`` names (checked to exist)."""
    module, _, directory = spec.partition(":")
    if not module or not directory or "/" in directory or directory.startswith("."):
        raise ConfigError(f"page must look like 'package.module:directory', not {spec!r}")
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError) as exc:
        raise ConfigError(f"page {spec!r}: cannot find module {module!r}: {exc}") from exc
    if found is None or found.origin is None:
        raise ConfigError(f"page {spec!r}: cannot find module {module!r}")
    path = Path(found.origin).resolve().parent / directory
    if not (path / "index.html").is_file():
        raise ConfigError(f"page {spec!r}: {path} has no index.html")
    return path


class PageMount:
    """WSGI middleware serving each service's page directory ({service: directory})."""

    def __init__(self, app: WSGIApp, pages: Mapping[str, str | Path]) -> None:
        self.app = app
        self.pages = {name: Path(directory) for name, directory in pages.items()}

    def file_for(self, path: str) -> Path | None:
        parts = path.split("/")
        if len(parts) != 3 or parts[0] or parts[1] not in self.pages:
            return None
        name = parts[2] or "index.html"
        if not FILE_NAME.fullmatch(name) or Path(name).suffix not in CONTENT_TYPES:
            return None
        candidate = self.pages[parts[1]] / name
        return candidate if candidate.is_file() else None

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        if method in ("GET", "HEAD"):
            found = self.file_for(environ.get("PATH_INFO", ""))
            if found is not None:
                body = found.read_bytes()
                start_response(
                    "200 OK",
                    [
                        ("Content-Type", CONTENT_TYPES[found.suffix]),
                        ("Content-Length", str(len(body))),
                        *HEADERS,
                    ],
                )
                return [b"" if method == "HEAD" else body]
        return self.app(environ, start_response)
