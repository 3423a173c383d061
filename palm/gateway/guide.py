"""What ``palm up`` prints once ready (curl commands that work) and what ``--once`` runs.

:func:`examples` picks, for each service of a deployment file, one function
and a payload it accepts; :func:`guide` turns them into curl commands against
the edge's URL, and :func:`smoke` sends the same requests and reports the
answers.
"""

from __future__ import annotations

import http.client
import json
import shlex
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from rich.text import Text

from palm.errors import ConfigError
from palm.ops.config import DeploymentConfig, ServiceConfig
from palm.ops.loading import load_object
from palm.serve.server import Server
from palm.serve.worker import Worker

__all__ = ["Example", "examples", "guide", "smoke", "styled"]


@dataclass(frozen=True)
class Example:
    """One request through the edge."""

    what: str
    path: str
    body: bytes
    service: str = ""
    function: str = ""

    def curl(self, url: str, api_key: str | None = None) -> str:
        return (
            f"curl -s{auth_option(api_key)} -X POST "
            f"--data-binary {shlex.quote(self.body.decode())} {url}{self.path}"
        )


def auth_option(api_key: str | None) -> str:
    """curl's option carrying the API key (nothing for an open edge)."""
    if api_key is None:
        return ""
    return " -H " + shlex.quote(f"Authorization: Bearer {api_key}")


OPEN_BANNER = (
    "!!! edge.auth is open: anyone who reaches {url} can call every service "
    "without an API key. For local development only. !!!"
)


def functions_of(service: ServiceConfig) -> list[str]:
    """The functions a service serves, ``foo`` first when there is one."""
    if service.kind == "function":
        names = list(service.functions)
    else:
        spec = service.server if service.kind == "standalone" else service.worker
        base: type = Server if service.kind == "standalone" else Worker
        try:
            cls = load_object(spec or "")
        except ConfigError:
            return []
        names = sorted(
            name
            for name in dir(cls)
            if not name.startswith("_")
            and not hasattr(base, name)
            and callable(getattr(cls, name, None))
        )
    return sorted(names, key=lambda name: name != "foo")


def examples(config: DeploymentConfig) -> list[Example]:
    """One call per service (a map too for function services), and an asynchronous job."""
    found: list[Example] = []
    for name, service in config.services.items():
        functions = functions_of(service)
        if not functions or service.example is False:
            continue
        fn = functions[0]
        body = service.example.encode() if isinstance(service.example, str) else None
        if service.kind == "function":
            route = f"{service.route}/{fn}"
            found.append(Example(f"{name}.{fn}(10)", route, body or b"10", name, fn))
            found.append(Example(f"{name}.{fn} mapped", f"/map/{name}/{fn}", b"[1, 2, 3, 4]"))
        else:
            found.append(
                Example(f"{name}.{fn}", f"{service.route}/{fn}", body or b"hello", name, fn)
            )
    if found:
        first = found[0]
        path = f"/jobs/{first.service}/{first.function}"
        found.append(Example(f"{first.what}, as a background job", path, first.body))
    return found


def rate_limit_line(config: DeploymentConfig) -> str:
    """What the edge's rate limit lets through, and what it answers beyond it."""
    from palm.gateway.envoy_config import RateLimit

    limit = RateLimit(**config.edge.rate_limit)  # type: ignore[arg-type]
    per_s = limit.tokens_per_fill / limit.fill_interval_s
    return (
        f"Rate limit: {per_s:,.0f} requests/s (bursts of {limit.max_tokens:,}) for the whole "
        "edge; more are answered 429 (edge.rate_limit in the deployment file)"
    )


def guide(config: DeploymentConfig, url: str, api_key: str | None = None) -> str:
    """A few lines a person can paste into a shell (with the API key, unless open)."""
    lines = [f"palm is up: {len(config.services)} services behind Envoy at {url}"]
    if config.edge.auth == "open":
        lines.append(OPEN_BANNER.format(url=url))
    elif api_key is not None:
        lines.append(f"API key (send it as 'Authorization: Bearer <key>'): {api_key}")
    lines.append(rate_limit_line(config))
    lines.append("Try:")
    for example in examples(config):
        lines.append(f"  # {example.what}")
        lines.append(f"  {example.curl(url, api_key)}")
    lines.append("  # a background job's status, then its result (the job id from the line above)")
    auth = auth_option(api_key)
    lines.append(f"  curl -s{auth} {url}/jobs/<job_id>")
    lines.append(f"  curl -s{auth} {url}/jobs/<job_id>/result")
    for name, service in config.services.items():
        if service.page:  # the key travels in the fragment, which browsers keep to themselves
            key = f"#key={api_key}" if api_key is not None else ""
            lines.append(f"  # {name}'s page: open it in a browser")
            lines.append(f"  {url}{service.route}/{key}")
    return "\n".join(lines)


def styled(text: str) -> Text:
    """The guide's lines with styles for a terminal (rich): the headline bold, the
    open-edge banner red, comments dim, commands cyan; nothing is rewrapped or
    read as markup, so every command stays one line to copy."""
    out = Text()
    for i, line in enumerate(text.splitlines()):
        stripped = line.strip()
        if i == 0:
            style = "bold green"
        elif stripped.startswith("!!!"):
            style = "bold red"
        elif stripped.startswith("#"):
            style = "dim"
        elif stripped.startswith(("curl ", "palm ")):
            style = "cyan"
        else:
            style = "bold" if stripped.endswith(":") else ""
        out.append(line + "\n", style=style)
    out.rstrip()
    return out


def _request(
    url: str, method: str, path: str, body: bytes | None, api_key: str | None = None
) -> tuple[int, bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key is not None else {}
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def smoke(
    config: DeploymentConfig, url: str, timeout_s: float = 30.0, api_key: str | None = None
) -> list[dict[str, Any]]:
    """Send every example through the edge (with ``api_key``); a job's result is fetched
    when it is done."""
    results: list[dict[str, Any]] = []
    for example in examples(config):
        status, body = _request(url, "POST", example.path, example.body, api_key)
        if example.path.startswith("/jobs/") and status == 202:
            job_id = json.loads(body)["job_id"]
            deadline = time.monotonic() + timeout_s
            delay_s = 0.01
            while status == 202 and time.monotonic() < deadline:
                time.sleep(delay_s)
                delay_s = min(delay_s * 2, 0.2)
                status, body = _request(url, "GET", f"/jobs/{job_id}/result", None, api_key)
        results.append({"what": example.what, "path": example.path, "status": status, "body": body})
    return results
