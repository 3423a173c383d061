"""The wire protocol: round trips and garbage, property-based."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from palm.errors import PayloadTooLarge, ProtocolError
from palm.wire.messages import encode_compact
from palm.wire.protocol import (
    ErrorInfo,
    Header,
    Kind,
    all_bytes,
    check_size,
    decode,
    encode,
    jobs_in,
)

kinds = st.sampled_from(sorted(Kind.NAMES))
small_int = st.integers(min_value=-(2**63), max_value=2**64 - 1)
text = st.text(max_size=40)
errors = st.lists(
    st.builds(
        ErrorInfo,
        offset=st.integers(0, 3),
        type=text,
        message=text,
        traceback=text,
        server=text,
        stage=st.integers(0, 1000),
    ),
    max_size=3,
)
extras = st.none() | st.dictionaries(
    st.text(max_size=8),
    st.none() | st.integers(-1000, 1000) | text | st.binary(max_size=8),
    max_size=4,
)
headers = st.builds(
    Header,
    kind=kinds,
    id=small_int,
    client=st.binary(max_size=32),
    function=text,
    stage=st.integers(0, 2**31),
    pipeline=st.none() | st.binary(max_size=16),
    key=st.none() | text,
    errors=st.none() | errors,
    extra=extras,
)


@settings(max_examples=300)
@given(headers, st.lists(st.binary(max_size=200), min_size=4, max_size=6))
def test_any_header_and_payloads_round_trip(header: Header, payloads: list[bytes]) -> None:
    decoded, out = decode(encode(header, payloads))
    assert decoded == header
    assert out == payloads


@settings(max_examples=1000)
@given(st.binary(max_size=300))
def test_arbitrary_header_bytes_raise_only_protocol_error(data: bytes) -> None:
    try:
        decode([data, b"payload"])
    except ProtocolError:
        pass


@settings(max_examples=500)
@given(st.lists(st.binary(max_size=64), max_size=5))
def test_arbitrary_frames_raise_only_protocol_error(frames: list[bytes]) -> None:
    try:
        decode(frames)
    except ProtocolError:
        pass


@settings(max_examples=300)
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**64 - 1)
        | st.floats()
        | st.text()
        | st.binary(),
        lambda inner: st.lists(inner, max_size=11) | st.dictionaries(st.text(), inner, max_size=3),
        max_leaves=20,
    )
)
def test_wellformed_msgpack_of_the_wrong_shape_is_a_protocol_error(value: object) -> None:
    try:
        decode([msgpack.packb(value), b"p"])
    except ProtocolError:
        pass


def test_a_job_without_payload_is_refused() -> None:
    with pytest.raises(ProtocolError, match="without payload"):
        decode([Header(Kind.JOB, 1).to_wire()])


def test_an_error_pointing_past_the_payloads_is_refused() -> None:
    header = Header(Kind.RESULT, 1, errors=[ErrorInfo(5, "T", "m")])
    with pytest.raises(ProtocolError, match="offset"):
        decode([header.to_wire(), b""])


def test_another_protocol_version_is_refused() -> None:
    header = Header(Kind.PING, 1, version=99)
    with pytest.raises(ProtocolError, match="version"):
        decode([header.to_wire()])


def test_size_check_counts_every_frame() -> None:
    check_size([b"x" * 50, b"y" * 50], 100)
    with pytest.raises(PayloadTooLarge) as info:
        check_size([b"x" * 50, b"y" * 51], 100)
    assert info.value.size == 101
    assert info.value.limit == 100


@settings(max_examples=200)
@given(headers, st.binary(max_size=300))
def test_compact_frames_round_trip(header: Header, payload: bytes) -> None:
    header.packed = 0
    header.errors = None
    decoded, out = decode(encode_compact(header, payload))
    assert decoded == header
    assert out == ([payload] if header.kind in (Kind.JOB, Kind.RESULT) else [])


@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_garbage_behind_the_compact_mark_is_a_protocol_error(data: bytes) -> None:
    try:
        decode([b"\xc1" + data])
    except ProtocolError:
        pass


class _Bytes(bytes):
    pass


@given(st.lists(st.one_of(st.binary(max_size=8), st.text(max_size=4), st.integers(),
                          st.builds(bytearray, st.binary(max_size=4)),
                          st.builds(_Bytes, st.binary(max_size=4)))))  # fmt: skip
def test_all_bytes_is_true_exactly_when_every_item_is_plain_bytes(items: list[object]) -> None:
    assert all_bytes(items) == all(type(item) is bytes for item in items)


def test_a_packed_message_with_one_item_not_bytes_is_a_protocol_error() -> None:
    header = Header(Kind.JOB, 1, b"c", "f", packed=3)
    assert jobs_in(header, [msgpack.packb([b"a", b"b", b"c"])]) == [b"a", b"b", b"c"]
    with pytest.raises(ProtocolError, match="not bytes"):
        jobs_in(header, [msgpack.packb([b"a", "b", b"c"])])
