"""Map answers are authenticated before they are unpickled, and bound to their chunk."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import pytest

from palm.call.jobs import JobStream
from palm.errors import ConfigError, ProtocolError
from palm.wire import shipping as mapping
from palm.wire.protocol import Header, Kind, decode

SECRET = b"cluster-secret"


def double(x: int) -> int:
    return 2 * x


class Boom:
    """Unpickling it would run code: it must never be unpickled on the client."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (Path(self.marker),))


def chunk_and_answer(items: list[int], secret: bytes = SECRET) -> tuple[bytes, bytes]:
    digest, fn = mapping.pickle_function(double)
    chunk = mapping.encode_chunk(secret, digest, fn, items)
    return chunk, mapping.run_chunk(chunk, secret, {})


def test_a_genuine_answer_decodes() -> None:
    chunk, answer = chunk_and_answer([1, 2])
    assert mapping.decode_answer(answer, 0, "f", secret=SECRET, chunk=chunk)[0] == [2, 4]


@pytest.mark.parametrize("position", [0, 5, 31, 32, 40, -1])
def test_a_flipped_bit_anywhere_is_rejected(position: int) -> None:
    chunk, answer = chunk_and_answer([1, 2])
    forged = bytearray(answer)
    forged[position] ^= 0x01
    assert not mapping.authentic(SECRET, chunk, bytes(forged))
    with pytest.raises(ProtocolError, match="authentication"):
        mapping.decode_answer(bytes(forged), 0, "f", secret=SECRET, chunk=chunk)


def test_an_answer_tagged_with_another_secret_is_rejected() -> None:
    chunk, _ = chunk_and_answer([1, 2])
    # a worker with another secret that answered anyway (it would refuse the chunk)
    body = pickle.dumps(("ok", [2, 4], 0.0))
    forged = mapping._answer(b"other-secret", chunk[:32], body)
    assert mapping._answer(SECRET, chunk[:32], body) != forged
    assert not mapping.authentic(SECRET, chunk, forged)


def test_an_answer_replayed_for_another_chunk_is_rejected() -> None:
    first, answer = chunk_and_answer([1, 2])
    second, _ = chunk_and_answer([1, 2])  # the same items: only the nonce differs
    assert mapping.authentic(SECRET, first, answer)
    assert not mapping.authentic(SECRET, second, answer)
    with pytest.raises(ProtocolError):
        mapping.decode_answer(answer, 0, "f", secret=SECRET, chunk=second)


def test_a_forged_pickle_is_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    chunk, _ = chunk_and_answer([1])
    for forged in (
        pickle.dumps(Boom(str(marker))),  # untagged
        b"\0" * 32 + pickle.dumps(Boom(str(marker))),  # a made-up tag
        b"palm-refused\0" + pickle.dumps(Boom(str(marker))),  # posing as a refusal
    ):
        with pytest.raises(ProtocolError):
            mapping.decode_answer(forged, 0, "f", secret=SECRET, chunk=chunk)
    assert not marker.exists()


def test_the_stream_keeps_a_rejected_job_outstanding_and_sends_it_again() -> None:
    rejected: list[bytes] = []
    chunk, answer = chunk_and_answer([3])
    stream = JobStream(
        b"c",
        "m.__map__",
        [chunk],
        ids=iter(range(1, 100)),
        ordered=True,
        max_message_bytes=1 << 20,
        check=lambda sent, got: mapping.authentic(SECRET, sent, got),
        on_reject=rejected.append,
    )
    (sent,) = stream.fill()
    header, _ = decode(sent)
    forged = b"\0" * 32 + b"junk"
    assert stream.accept(result_for(header.id, forged)) == []
    assert stream.rejected == 1 and rejected == [forged]
    assert stream.outstanding  # still waiting for the genuine answer
    (again,) = stream.retries(now=100.0)  # the first time at once
    assert decode(again)[0].id == header.id
    assert stream.retries(now=100.0) == []  # not twice for one rejection
    assert stream.accept(result_for(header.id, answer)) == [answer]
    assert stream.done


def test_later_rejections_of_one_job_are_sent_again_later_and_later() -> None:
    chunk, _ = chunk_and_answer([3])
    stream = JobStream(
        b"c",
        "m.__map__",
        [chunk],
        ids=iter(range(1, 100)),
        max_message_bytes=1 << 20,
        check=lambda sent, got: False,
    )
    (sent,) = stream.fill()
    job = decode(sent)[0].id
    stream.accept(result_for(job, b"x"))
    assert len(stream.retries(now=0.0)) == 1  # the first rejection: at once
    delays = []
    for _ in range(10):
        stream.accept(result_for(job, b"x"))
        assert stream.retries(now=0.0) == []  # not yet
        delays.append(stream.retry_wait_s(0.0, 60.0))
        assert len(stream.retries(now=delays[-1])) == 1
    assert delays[0] > 0 and delays == sorted(delays) and delays[-1] == stream.retry_max_s


def result_for(job_id: int, payload: bytes) -> list[bytes]:
    return [Header(Kind.RESULT, job_id, b"c", "m.__map__").to_wire(), payload]


def test_loopback_endpoints() -> None:
    for endpoint in ("tcp://127.0.0.1:5", "tcp://127.3.4.5:5", "ipc:///tmp/x", "inproc://a"):
        assert mapping.is_loopback(endpoint)
    for endpoint in (
        "tcp://10.255.255.1:1",
        "tcp://0.0.0.0:5",
        "tcp://example.com:5",
        "tcp://eth0:1",
    ):
        assert not mapping.is_loopback(endpoint)


def test_no_secret_off_loopback_is_refused_with_how_to_fix_it() -> None:
    with pytest.raises(ConfigError, match="PALM_SECRET") as err:
        mapping.require_secret(None, ["tcp://127.0.0.1:1", "tcp://10.255.255.1:1"])
    assert "10.255.255.1" in str(err.value)


def test_the_local_secret_is_private_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "palm" / "local-secret"
    first = mapping.local_secret(path)
    assert mapping.local_secret(path) == first and len(first) == 64
    assert path.stat().st_mode & 0o777 == 0o600
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        mapping.local_secret(path)
