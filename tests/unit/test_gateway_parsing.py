"""Property-based tests of what the gateway reads from clients and writes back.

Thousands of generated requests (random bytes, JSON nested far past the
recursion limit, huge integers, any unicode) go through the Flask app's test
client and the ASGI app, with palm clients replaced by in-process echoes: the
gateway answers 2xx or 4xx, never 5xx, and JSON values come back as they went.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import string
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import palm.gateway.clients
from palm.errors import PayloadTooLarge, RemoteError
from palm.gateway.app import create_app, describe_error
from palm.gateway.asgi import EdgeApp
from palm.gateway.clients import to_bytes
from palm.gateway.encoding import MAX_INT_DIGITS, decimal_text, python_json, result_json

pytestmark = pytest.mark.timeout(600)

LIMIT = 1024 * 1024  # room for the deepest bodies
DEEP = 100_000  # far past any recursion limit

# JSON values as a client sends them (no NaN: it is not JSON)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)


def nested(depth: int, opener: str, closer: str, core: str = "1") -> bytes:
    return (opener * depth + core + closer * depth).encode()


nested_bodies = st.builds(
    nested,
    st.integers(min_value=1, max_value=DEEP),
    st.sampled_from(["[", '{"a":', "[[{}, "]),
    st.sampled_from(["]", "}", "]]"]),
    st.sampled_from(["1", '"x"', "null", ""]),
)
huge_ints = st.integers(min_value=MAX_INT_DIGITS - 2, max_value=3 * MAX_INT_DIGITS).map(
    lambda digits: ("-" if digits % 2 else "") + "9" * digits
)
bodies = st.one_of(
    st.binary(max_size=2048),
    nested_bodies,
    huge_ints.map(lambda text: f"[{text}]".encode()),
    st.text().map(lambda text: text.encode("utf-8", "surrogatepass")),
    json_values.map(lambda value: json.dumps(value).encode()),
)
# paths as a server hands them on ("//host" would be a URL to the test client)
paths = st.text(alphabet=string.printable + "é\u2603%", max_size=40).map(
    lambda p: "/" + p.lstrip("/")
)


class Echo:
    """A caller answering each job with its payload (a map with each item's JSON text)."""

    def call(self, function: str, payload: bytes, request_id: str | None = None) -> bytes:
        return payload

    def map(self, function: str, payloads: list[bytes]) -> list[bytes]:
        return list(payloads)

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def app() -> Iterator[Flask]:
    patch = pytest.MonkeyPatch()
    patch.setattr(palm.gateway.clients, "make_caller", lambda spec, timeout_s: Echo())
    flask_app = create_app(
        {
            "services": {"tools": {"kind": "standalone", "address": "tcp://127.0.0.1:9"}},
            "max_payload_bytes": LIMIT,
            "redis_url": None,
            "auth": "open",  # what is parsed, not who may call
        }
    )
    yield flask_app
    patch.undo()


@pytest.fixture(scope="module")
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def assert_not_5xx(status: int, body: bytes) -> None:
    assert status < 500, body[:300]
    if status >= 400:
        error = json.loads(body)
        assert set(error) >= {"error", "detail"}


FAST = settings(
    max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FAST
@given(body=bodies)
def test_any_map_body_is_answered_2xx_or_4xx(client: FlaskClient, body: bytes) -> None:
    reply = client.post("/map/tools/echo", data=body)
    assert_not_5xx(reply.status_code, reply.data)


@FAST
@given(path=paths, body=bodies, method=st.sampled_from(["POST", "GET", "PUT"]))
def test_any_route_is_answered_2xx_or_4xx(
    client: FlaskClient, path: str, body: bytes, method: str
) -> None:
    reply = client.open(path, method=method, data=body, headers={"x-request-id": "r"})
    assert_not_5xx(reply.status_code, reply.data)


@settings(max_examples=500, deadline=None)
@given(depth=st.integers(min_value=2 * sys.getrecursionlimit(), max_value=DEEP))
def test_json_nested_past_the_recursion_limit_is_400(client: FlaskClient, depth: int) -> None:
    reply = client.post("/map/tools/echo", data=nested(depth, "[", "]"))
    assert reply.status_code == 400
    assert reply.get_json()["error"] == "malformed body"


@pytest.mark.parametrize(
    "body",
    [b"\xff\xfe[1]", b'{"a": [1]}', b'"text"', b"[1, 2", nested(DEEP, "[", "]")],
    ids=["invalid-utf8", "object", "string", "truncated", "deep"],
)
def test_bodies_that_are_not_json_arrays_are_400(client: FlaskClient, body: bytes) -> None:
    reply = client.post("/map/tools/echo", data=body)
    assert reply.status_code == 400
    assert reply.get_json()["error"] == "malformed body"


@FAST
@given(items=st.lists(json_values, max_size=8))
def test_json_values_round_trip_through_map(client: FlaskClient, items: list[Any]) -> None:
    reply = client.post("/map/tools/echo", data=json.dumps(items))
    assert reply.status_code == 200
    assert reply.get_json() == items


@FAST
@given(value=json_values)
def test_a_result_that_is_json_text_is_that_value(value: Any) -> None:
    assert json.loads(result_json(json.dumps(value).encode())) == value


@FAST
@given(raw=st.binary(max_size=512))
def test_any_result_bytes_are_written_as_json(raw: bytes) -> None:
    written = json.loads(result_json(raw))
    try:  # JSON text is UTF-8 (json.loads of bytes would also guess UTF-16 and -32)
        expected = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):
        assert base64.b64decode(written) == raw
    else:
        assert written == expected


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(min_value=0, max_value=40_000).flatmap(
        lambda bits: st.integers(min_value=-(2**bits), max_value=2**bits)
    )
)
def test_integers_of_any_size_are_written_by_the_documented_rule(n: int) -> None:
    written = json.loads(python_json({"n": [n]}))["n"][0]
    if len(decimal_text(abs(n))) > MAX_INT_DIGITS:
        assert written == decimal_text(n)
        assert isinstance(written, str)
    else:
        assert written == n
    assert decimal_text(n) == format_unlimited(n)


def format_unlimited(n: int) -> str:
    """``str(n)`` with Python's int-to-str limit lifted for the call alone."""
    old = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        return str(n)
    finally:
        sys.set_int_max_str_digits(old)


def test_a_function_result_over_the_int_to_str_limit_is_a_decimal_string() -> None:
    big = math.factorial(2000)
    assert json.loads(to_bytes(big, text_as_json=False)) == format_unlimited(big)
    assert json.loads(to_bytes([big, 1], text_as_json=True)) == [format_unlimited(big), 1]
    assert sys.get_int_max_str_digits() == sys.int_info.default_max_str_digits


# -- the ASGI app ---------------------------------------------------------------


class AsyncEcho:
    async def eval(self, function: str, payload: bytes, request_id: str = "") -> bytes:
        return payload


@pytest.fixture(scope="module")
def edge(app: Flask) -> Iterator[EdgeApp]:
    flask_app = create_app(
        {
            "services": {
                "par": {
                    "kind": "parallel",
                    "push_address": "tcp://127.0.0.1:9",
                    "pull_address": "tcp://127.0.0.1:9",
                    "db_address": "tcp://127.0.0.1:9",
                }
            },
            "max_payload_bytes": LIMIT,
            "redis_url": None,
            "auth": "open",  # what is parsed, not who may call
        }
    )
    edge_app = EdgeApp(flask_app, wsgi_threads=2)
    edge_app._client = lambda service: AsyncEcho()  # type: ignore[assignment,method-assign,return-value]
    yield edge_app
    edge_app.wsgi.executor.shutdown(wait=False)  # type: ignore[attr-defined]


def asgi_request(
    edge_app: EdgeApp, path: str, body: bytes, headers: list[tuple[bytes, bytes]]
) -> tuple[int, bytes]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("utf-8", "surrogatepass"),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    sent: list[dict[str, Any]] = []
    incoming = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if incoming:
            return incoming.pop()
        await asyncio.sleep(3600)  # the client keeps the connection open
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(dict(message))

    asyncio.run(asyncio.wait_for(edge_app(scope, receive, send), 30))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    data = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, data


header_values = st.binary(max_size=40).filter(lambda v: b"\r" not in v and b"\n" not in v)


@settings(max_examples=600, deadline=None)
@given(
    path=st.sampled_from(["/par/echo", "/par/", "/map/par/echo", "/par/a/b"]) | paths,
    body=bodies,
    length=st.sampled_from(["exact", "missing", "junk", "negative", "huge"]),
    request_id=header_values,
)
def test_the_asgi_app_answers_any_request_2xx_or_4xx(
    edge: EdgeApp, path: str, body: bytes, length: str, request_id: bytes
) -> None:
    sizes = {
        "exact": str(len(body)).encode(),
        "junk": b"12ab",
        "negative": b"-5",
        "huge": str(LIMIT * 10).encode(),
    }
    headers = [(b"x-request-id", request_id)]
    if length in sizes:
        headers.append((b"content-length", sizes[length]))
    status, data = asgi_request(edge, path, body, headers)
    assert_not_5xx(status, data)
    if path == "/par/echo" and length == "exact" and len(body) <= LIMIT:
        assert (status, data) == (200, body)


def test_the_asgi_app_answers_400_when_parsing_fails_unexpectedly(edge: EdgeApp) -> None:
    def broken(*args: Any) -> None:
        raise RuntimeError("a bug in the parser")

    original = edge.route.match
    edge.route.match = broken  # type: ignore[method-assign,assignment]
    try:
        status, data = asgi_request(edge, "/par/echo", b"x", [(b"content-length", b"1")])
    finally:
        edge.route.match = original  # type: ignore[method-assign]
    assert status == 400
    assert json.loads(data)["error"] == "malformed request"


@pytest.mark.parametrize(
    "exc",
    [
        PayloadTooLarge(2000, 1000),
        RemoteError("palm.PayloadTooLarge", "message of 2000 bytes is over the limit of 1000"),
    ],
    ids=["local", "remote"],
)
def test_a_payload_too_large_anywhere_is_413(exc: Exception) -> None:
    info = describe_error(exc)
    assert (info["status"], info["error"]) == (413, "payload too large")
