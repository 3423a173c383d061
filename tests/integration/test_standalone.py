"""The standalone topology with real server processes on loopback."""

from __future__ import annotations

import builtins
import os
import random
import signal
import sys
import threading
from pathlib import Path

import pytest
import zmq

from palm import BadResult, PayloadTooLarge, RemoteError, TimeoutError, UnknownFunction
from palm.standalone import Client
from palm.wire.protocol import Header, Kind
from tests.fixtures.procs import Processes, free_port

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "examples" / "presentation"
SPEC = "tests.apps.services:EchoServer"


def sample(tmp_path: Path, name: str, ports: dict[int, int]) -> Path:
    """A presentation sample with its fixed ports swapped for free ones."""
    text = (SAMPLES / name).read_text()
    for fixed, port in ports.items():
        text = text.replace(f":{fixed}'", f":{port}'")
    out = tmp_path / name
    out.write_text(text)
    return out


@pytest.fixture
def server(procs: Processes) -> tuple[str, int]:
    proc, info = procs.palm("serve", SPEC, "--name", "echo", "--address", "tcp://127.0.0.1:*")
    return info["address"], proc.pid


@pytest.mark.timeout(60)
def test_presentation_sample_runs_in_two_processes(procs: Processes, tmp_path: Path) -> None:
    ports = {5555: free_port()}
    srv = procs.start([sys.executable, str(sample(tmp_path, "standalone_server.py", ports))])
    client = procs.start([sys.executable, str(sample(tmp_path, "standalone_client.py", ports))])
    out, _ = client.communicate(timeout=40)
    assert client.returncode == 0
    assert out.strip() == "Client got:  b'you sent me a message'"
    assert srv.poll() is None


@pytest.mark.timeout(60)
def test_function_may_be_bare_or_qualified(server: tuple[str, int]) -> None:
    with Client(server[0], "echo") as client:
        assert client.job("foo", b"a message") == b"you sent me a message"
        assert client.job("echo.foo", b"x") == b"you sent me x"


@pytest.mark.timeout(60)
def test_calls_of_several_functions_in_turn_each_get_their_answer(server: tuple[str, int]) -> None:
    # each function's header is made once and kept: ids and names must still match
    with Client(server[0], "echo") as client:
        for i in range(200):
            payload = str(i).encode()
            assert client.job("echo", payload) == payload
            assert client.job("echo.foo", payload) == b"you sent me " + payload
            assert client.job("foo", payload, request_id=f"r-{i}") == b"you sent me " + payload
        with pytest.raises(UnknownFunction):
            client.job("nope", b"x")
        assert client.job("echo", b"after") == b"after"
        assert sorted(client._tails) == ["echo", "echo.foo", "nope"]


@pytest.mark.timeout(120)
def test_eight_concurrent_clients_each_get_their_own_replies(server: tuple[str, int]) -> None:
    errors: list[str] = []

    def run(n: int) -> None:
        with Client(server[0], "echo", timeout_s=30) as client:
            for i in range(1000):
                payload = f"client {n} request {i}".encode()
                reply = client.job("echo", payload)
                if reply != payload:
                    errors.append(f"{payload!r} got {reply!r}")

    threads = [threading.Thread(target=run, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(100)
    assert not any(t.is_alive() for t in threads)
    assert errors == []


@pytest.mark.timeout(60)
def test_a_slow_client_does_not_wedge_another(server: tuple[str, int]) -> None:
    slow = Client(server[0], "echo", timeout_s=10)
    quick = Client(server[0], "echo", timeout_s=10)
    # the slow client sends and does not read its reply for a while
    slow._sock().send_multipart([Header(Kind.JOB, 99, slow.client_id, "echo.echo").to_wire(), b"z"])
    assert quick.job("echo", b"still served") == b"still served"
    slow.close()
    quick.close()


@pytest.mark.timeout(60)
def test_unknown_function_names_it_and_lists_the_functions(server: tuple[str, int]) -> None:
    with Client(server[0], "echo") as client, pytest.raises(UnknownFunction) as info:
        client.job("nope", b"x")
    message = str(info.value)
    assert "'nope'" in message
    for name in ("boom", "echo", "foo", "notbytes", "slow"):
        assert name in message


@pytest.mark.timeout(60)
def test_user_exception_travels_and_the_server_keeps_serving(server: tuple[str, int]) -> None:
    with Client(server[0], "echo") as client:
        with pytest.raises(RemoteError) as info:
            client.job("boom", b"bad input")
        err = info.value
        assert err.remote_type == "ValueError"
        assert err.remote_message == "boom: bad input"
        assert "raise ValueError" in err.remote_traceback
        assert client.job("foo", b"after") == b"you sent me after"


@pytest.mark.timeout(60)
def test_returning_a_str_is_a_clear_error_not_a_crash(server: tuple[str, int]) -> None:
    with Client(server[0], "echo") as client:
        with pytest.raises(BadResult, match="returned str, not bytes"):
            client.job("notbytes", b"x")
        assert client.job("echo", b"fine") == b"fine"


@pytest.mark.timeout(60)
def test_timeout_against_a_dead_server_then_success_after_it_starts(procs: Processes) -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    client = Client(address, "echo", timeout_s=0.5)
    with pytest.raises(TimeoutError, match="no reply from server 'echo'"):
        client.job("foo", b"x")
    assert issubclass(TimeoutError, builtins.TimeoutError)
    procs.palm("serve", SPEC, "--name", "echo", "--address", address)
    client.timeout_s = 10
    assert client.job("foo", b"x") == b"you sent me x"
    client.close()


@pytest.mark.timeout(60)
def test_sigterm_stops_the_server_cleanly(procs: Processes) -> None:
    proc, info = procs.palm("serve", SPEC, "--name", "echo", "--address", "tcp://127.0.0.1:*")
    with Client(info["address"], "echo") as client:
        assert client.job("echo", b"x") == b"x"
    proc.send_signal(signal.SIGTERM)
    # exit code 0: it stopped on the signal itself (a generous deadline, not a timing)
    assert proc.wait(30) == 0


@pytest.mark.timeout(60)
def test_stop_from_another_thread_returns_and_leaves_no_thread() -> None:
    from tests.apps.services import EchoServer

    server = EchoServer("inproc", "tcp://127.0.0.1:*")
    ready = threading.Event()
    server.on_ready = lambda s: ready.set()
    before = threading.active_count()
    t = threading.Thread(target=server.start)
    t.start()
    assert ready.wait(10)
    assert server.bound_address is not None
    with Client(server.bound_address, "inproc") as client:
        assert client.job("echo", b"x") == b"x"
    server.stop()
    t.join(5)
    assert not t.is_alive()
    assert threading.active_count() == before


@pytest.mark.timeout(60)
def test_oversized_messages_are_refused_with_a_clear_error(procs: Processes) -> None:
    _, info = procs.palm(
        "serve",
        SPEC,
        "--name",
        "echo",
        "--address",
        "tcp://127.0.0.1:*",
        "--max-message-bytes",
        "1000",
    )
    small_limit = Client(info["address"], "echo", max_message_bytes=1000)
    with pytest.raises(PayloadTooLarge):
        small_limit.job("echo", b"x" * 2000)
    big_limit = Client(info["address"], "echo")
    with pytest.raises(RemoteError, match="over the limit of 1000 bytes") as err:
        big_limit.job("echo", b"x" * 2000)
    assert err.value.remote_type == "palm.PayloadTooLarge"
    assert big_limit.job("echo", b"small") == b"small"
    small_limit.close()
    big_limit.close()


@pytest.mark.timeout(180)
def test_fuzzed_frames_do_not_stop_the_server(server: tuple[str, int]) -> None:
    address, pid = server
    rng = random.Random(1234)
    good = Header(Kind.JOB, 7, b"fuzz", "echo.echo").to_wire()
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 60_000)  # closing waits until every frame is sent
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.connect(address)
    for i in range(100_000):
        kind = i % 4
        if kind == 0:
            frames = [rng.randbytes(rng.randrange(0, 40)) for _ in range(rng.randrange(1, 4))]
        elif kind == 1:
            frames = [good[: rng.randrange(0, len(good))], b"payload"]
        elif kind == 2:
            mutated = bytearray(good)
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            frames = [bytes(mutated)]
        else:
            frames = [b""]
        sock.send_multipart(frames)
    # a real request on the same connection is handled after every fuzzed one
    sock.send_multipart([Header(Kind.JOB, 10**9, b"fuzz", "echo.foo").to_wire(), b"still alive"])
    assert sock.poll(120_000)
    frames = sock.recv_multipart()
    while frames[-1] != b"you sent me still alive":  # replies to valid fuzzed jobs
        assert sock.poll(10_000)
        frames = sock.recv_multipart()
    sock.close()
    with Client(address, "echo", timeout_s=60) as client:
        assert client.job("foo", b"again") == b"you sent me again"
        info = client.info()
    assert int(info["malformed"]) > 50_000  # type: ignore[call-overload]
    os.kill(pid, 0)
