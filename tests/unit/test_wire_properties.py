"""Property-based tests of every decoder that reads bytes off the network.

Each decoder gets thousands of inputs: random bytes, random msgpack values,
headers of the right shape with fields of any type, and mutations of valid
messages. Whatever comes in, a decoder returns or raises one of palm's own
errors; nothing else escapes.
"""

from __future__ import annotations

import os
import pickle
from typing import Any

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from palm.errors import PalmError
from palm.wire import shipping
from palm.wire.control import Credit, Hello, Ready, ResultMeta, Welcome, unparsable
from palm.wire.info import ServiceInfo
from palm.wire.messages import compact, job_message
from palm.wire.protocol import VERSION, Header, Kind, decode, decode_header, jobs_in
from palm.wire.session import Session

MANY = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True)
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=6) | st.integers(-3, 3), inner, max_size=3)
    ),
    max_leaves=4,
)
kinds = st.sampled_from(sorted(Kind.NAMES)) | st.integers(-2, 20)

control_extras = st.dictionaries(
    st.sampled_from(
        [
            "credit",
            "pid",
            "host",
            "name",
            "functions",
            "session",
            "reset",
            "master",
            "workers",
            "interval_s",
            "previous",
            "probe",
            "w",
            "route",
            "of",
        ]
    ),
    values,
    max_size=8,
)

#: each field of a header: a value of the right type
good_fields = (
    st.just(VERSION),
    kinds,
    st.integers(-(2**63), 2**64 - 1),
    st.binary(max_size=16),
    st.text(max_size=16),
    st.integers(-5, 5),
    st.none() | st.binary(max_size=8),
    st.none() | st.text(max_size=8),
    st.none() | st.lists(st.lists(values, min_size=6, max_size=6), max_size=3),
    st.none() | control_extras | st.dictionaries(st.text(max_size=10), values, max_size=4),
    st.integers(0, 6),
)


@st.composite
def header_lists(draw: st.DrawFn) -> list[Any]:
    """An 11-item header array of fields of the right type, but for up to two."""
    fields = [draw(f) for f in good_fields]
    for _ in range(draw(st.integers(0, 2))):
        fields[draw(st.integers(0, len(fields) - 1))] = draw(values)
    return fields


def _pack(value: Any) -> bytes:
    try:
        return msgpack.packb(value, use_bin_type=True)
    except (OverflowError, ValueError, TypeError):
        return msgpack.packb(None)


header_frames = header_lists().map(_pack) | st.binary(max_size=64) | values.map(_pack)
payload_frames = st.lists(st.binary(max_size=32) | values.map(_pack), max_size=4)


def _only_palm_errors(call: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return call(*args, **kwargs)
    except PalmError:
        return None


@MANY
@given(header_frames)
def test_decode_header_returns_a_header_or_raises_palm_errors(frame: bytes) -> None:
    header = _only_palm_errors(decode_header, frame)
    if header is not None:
        assert header.kind in Kind.NAMES and header.packed >= 0
        wire = header.to_wire()  # what decodes re-encodes (as bytes: NaN is not NaN)
        assert decode_header(wire).to_wire() == wire


@MANY
@given(header_frames, payload_frames)
def test_decode_and_jobs_in_raise_only_palm_errors(head: bytes, payloads: list[bytes]) -> None:
    decoded = _only_palm_errors(decode, [head, *payloads])
    if decoded is not None:
        header, frames = decoded
        jobs = _only_palm_errors(jobs_in, header, frames)
        assert jobs is None or all(isinstance(j, bytes) for j in jobs)


@MANY
@given(header_frames, st.binary(max_size=64), st.integers(0, 70000))
def test_decode_of_compact_frames_raises_only_palm_errors(
    head: bytes, payload: bytes, length: int
) -> None:
    _only_palm_errors(decode, [compact(head, payload)])
    # a compact frame lying about its header's length
    forged = b"\xc1" + (length % 65536).to_bytes(2, "big") + head + payload
    _only_palm_errors(decode, [forged])


def _mutate(frame: bytes, data: st.DataObject) -> bytes:
    if not frame:
        return frame
    out = bytearray(frame)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(out) - 1))
        how = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if how == "flip":
            out[at] = data.draw(st.integers(0, 255))
        elif how == "cut":
            del out[at:]
            if not out:
                break
        else:
            out[at:at] = data.draw(st.binary(min_size=1, max_size=4))
    return bytes(out)


@MANY
@given(st.data())
def test_mutated_valid_messages_raise_only_palm_errors(data: st.DataObject) -> None:
    payloads = data.draw(st.lists(st.binary(max_size=12), min_size=1, max_size=4))
    frames = job_message(
        b"client", 5, "m.echo", payloads, request_ids=["r"] * len(payloads), key="k"
    )
    which = data.draw(st.integers(0, len(frames) - 1))
    frames[which] = _mutate(frames[which], data)
    decoded = _only_palm_errors(decode, frames)
    if decoded is not None:
        header, rest = decoded
        _only_palm_errors(jobs_in, header, rest)
        reply, empties = unparsable(header, rest, "test", "m")
        assert len(reply.errors or ()) == len(empties) >= 1


@MANY
@given(kinds.filter(lambda k: k in Kind.NAMES), st.none() | control_extras)
def test_control_decoders_return_checked_fields_or_raise_palm_errors(
    kind: int, extra: dict[str, Any] | None
) -> None:
    header = Header(kind, 0, extra=extra)
    ready = _only_palm_errors(Ready.from_header, header)
    if ready is not None:
        assert type(ready.credit) is int and ready.credit >= 0
        assert type(ready.pid) is int and isinstance(ready.host, str)
        assert all(isinstance(f, str) for f in ready.functions)
    credit = _only_palm_errors(Credit.from_header, header)
    assert credit is None or (type(credit.credit) is int and credit.credit >= 0)
    welcome = _only_palm_errors(Welcome.from_header, header)
    if welcome is not None:
        assert welcome.session is None or isinstance(welcome.session, str)
        assert welcome.workers is None or type(welcome.workers) is int
        assert welcome.interval_s is None or welcome.interval_s > 0
    hello = _only_palm_errors(Hello.from_header, header)
    assert hello is None or hello.previous is None or isinstance(hello.previous, str)
    meta = _only_palm_errors(ResultMeta.from_header, header)
    assert meta is None or meta.worker is None or isinstance(meta.worker, bytes)


@MANY
@given(header_frames, payload_frames, control_extras)
def test_session_welcome_never_raises(
    head: bytes, payloads: list[bytes], extra: dict[str, Any]
) -> None:
    session = Session(b"me")
    assert session.welcome([head, *payloads]) in (True, False)
    assert session.welcome([Header(Kind.WELCOME, extra=extra).to_wire()]) in (True, False)
    assert session.session_id is None or isinstance(session.session_id, str)
    assert type(session.workers) is int


info_maps = st.dictionaries(
    st.sampled_from(["name", "kind", "functions", "addresses", "stats", "workers", "pid"])
    | st.text(max_size=6),
    values,
    max_size=8,
)


@MANY
@given(info_maps.map(_pack) | st.binary(max_size=64) | values.map(_pack))
def test_service_info_from_wire_raises_only_palm_errors(data: bytes) -> None:
    info = _only_palm_errors(ServiceInfo.from_wire, data)
    assert info is None or isinstance(info.name, str)


SECRET = os.urandom(16)


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=200))
def test_an_unsigned_map_chunk_is_refused_without_unpickling(payload: bytes) -> None:
    answer = shipping.run_chunk(payload, SECRET, {})
    # never raises; a chunk without the cluster's signature gets a plain-text refusal
    assert shipping.refusal(answer) is not None


CHUNK = shipping.encode_chunk(SECRET, b"digest-16-bytes!", b"function", [1, 2])


@settings(max_examples=1000, deadline=None)
@given(values | st.tuples(st.sampled_from(["ok", "err"]), values, values, values, values))
def test_decode_answer_raises_only_palm_errors(shape: Any) -> None:
    # authentic answers of any shape: the answer's structure is checked
    signed = shipping._answer(SECRET, CHUNK[: shipping._TAG], pickle.dumps(shape))
    for answer in (signed, signed[:-1], pickle.dumps(shape)):
        _only_palm_errors(shipping.decode_answer, answer, 0, "f", secret=SECRET, chunk=CHUNK)
