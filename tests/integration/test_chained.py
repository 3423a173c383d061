"""Chained servers in real processes: client -> step1 -> step2 -> last -> client."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

from palm import RemoteError, TimeoutError
from palm.chained import LoopClient
from tests.fixtures.procs import Processes, free_port, wait_for
from tests.fixtures.stages import ANY, stage, workers

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "examples" / "presentation"


def sample(tmp_path: Path, name: str, ports: dict[int, int]) -> Path:
    """A presentation sample with its fixed ports swapped for free ones."""
    text = (SAMPLES / name).read_text()
    for fixed, port in ports.items():
        text = text.replace(f':{fixed}"', f':{port}"').replace(f":{fixed}'", f":{port}'")
    out = tmp_path / name
    out.write_text(text)
    return out


def chain(procs: Processes, middle: str = "Step2") -> dict[str, str]:
    """step1 (serial) -> step2 (``middle``) -> last, bound on OS-chosen ports."""
    _, last = stage(procs, "Last", name="last", pull_address=ANY, push_address=ANY, db_address=ANY)
    if middle == "Step2":
        _, step2 = stage(
            procs,
            "Step2",
            name="step2",
            pull_address=ANY,
            next_address=last["pull"],
            next_call="last.baz",
            db_address=ANY,
        )
    else:
        _, step2 = stage(
            procs,
            "chained.Master",
            name="step2",
            pull_address=ANY,
            worker_pull_address=ANY,
            worker_push_address=ANY,
            db_address=ANY,
            next_address=last["pull"],
            next_call="last.baz",
        )
    _, step1 = stage(
        procs,
        "Step1",
        name="step1",
        pull_address=ANY,
        next_address=step2["pull"],
        next_call="step2.bar",
        db_address=ANY,
    )
    return {
        "step1": step1["pull"],
        "db": step1["db"],
        "step2": step2["pull"],
        "step2_db": step2["db"],
        "last": last["push"],
    }


def client(addresses: dict[str, str], **options: object) -> LoopClient:
    return LoopClient(
        push_address=addresses["last"],
        pull_address=addresses["step1"],
        db_address=addresses["db"],
        server_name="step1",
        **options,  # type: ignore[arg-type]
    )


@pytest.mark.timeout(90)
def test_presentation_chained_sample_runs_in_four_processes(
    procs: Processes, tmp_path: Path
) -> None:
    ports = {p: free_port() for p in (5555, 5556, 5557, 5558, 5559, 5560, 5561)}
    for name in ("chained_last.py", "chained_step2.py", "chained_step1.py"):
        procs.start([sys.executable, str(sample(tmp_path, name, ports))])
    run = procs.start([sys.executable, str(sample(tmp_path, "chained_client.py", ports))])
    out, _ = run.communicate(timeout=60)
    assert run.returncode == 0
    assert out.strip() == "Client got:  b'ACK: you sent me a message (through step2)'"


@pytest.mark.timeout(180)
def test_ten_thousand_messages_through_a_parallel_middle_stage_arrive_once(
    procs: Processes,
) -> None:
    addresses = chain(procs, middle="Master")
    workers(procs, addresses["step2_db"], 2)
    payloads = [b"m%d" % i for i in range(10_000)]
    seen: dict[bytes, int] = {}
    with client(addresses, timeout_s=60) as c:
        for delivery in c.deliveries("foo", payloads):
            assert delivery.error is None
            assert delivery.stage == 3
            seen[delivery.payload] = seen.get(delivery.payload, 0) + 1
    expected = {b"ACK: you sent me " + p + b" via step2" for p in payloads}
    assert set(seen) == expected
    assert set(seen.values()) == {1}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("middle", ["Step2", "Master"])
def test_an_error_at_stage_two_reaches_the_client_naming_stage_two(
    procs: Processes, middle: str
) -> None:
    addresses = chain(procs, middle=middle)
    if middle == "Master":
        workers(procs, addresses["step2_db"], 1)
    with client(addresses, timeout_s=30) as c:
        out = list(c.job("foo", [b"a", b"boom", b"b"], errors="yield"))
        assert sorted(o for o in out if isinstance(o, bytes)) == [
            b"ACK: you sent me a via step2",
            b"ACK: you sent me b via step2",
        ]
        [error] = [o for o in out if isinstance(o, RemoteError)]
        assert error.stage == 2
        assert error.server == "step2"
        assert error.remote_type == "ValueError"
        assert "(stage 2)" in str(error)
        assert "cannot take you sent me boom" in str(error)
        with pytest.raises(RemoteError, match=r"step2 \(stage 2\)"):
            list(c.job("foo", [b"boom"]))
        assert list(c.job("foo", [b"after"])) == [b"ACK: you sent me after via step2"]


@pytest.mark.timeout(120)
def test_a_killed_stage_makes_the_timeout_name_it_and_jobs_flow_when_it_is_back(
    procs: Processes,
) -> None:
    _, last = stage(procs, "Last", name="last", pull_address=ANY, push_address=ANY, db_address=ANY)
    step2_pull = f"tcp://127.0.0.1:{free_port()}"
    step2_args = dict(
        name="step2",
        pull_address=step2_pull,
        next_address=last["pull"],
        next_call="last.baz",
        db_address=ANY,
    )
    step2, _ = stage(procs, "Step2", **step2_args)
    _, step1 = stage(
        procs,
        "Step1",
        name="step1",
        pull_address=ANY,
        next_address=step2_pull,
        next_call="step2.bar",
        db_address=ANY,
    )
    addresses = {"step1": step1["pull"], "db": step1["db"], "last": last["push"]}
    with client(addresses, timeout_s=4, probe_s=1.5) as c:
        assert list(c.job("foo", [b"x"])) == [b"ACK: you sent me x via step2"]
        step2.send_signal(signal.SIGKILL)
        step2.wait(10)
        with pytest.raises(TimeoutError) as info:
            list(c.job("foo", [b"y"]))
        message = str(info.value)
        assert "waiting for stage 2 (step2.bar at " + step2_pull in message
        assert "stage 1 'step1'" in message
        stage(procs, "Step2", **step2_args)
        c.timeout_s = 30
        assert list(c.job("foo", [b"z"])) == [b"ACK: you sent me z via step2"]


@pytest.mark.timeout(60)
def test_probe_lists_every_stage_and_a_dead_last_stage_is_named(procs: Processes) -> None:
    addresses = chain(procs)
    with client(addresses, timeout_s=3) as c:
        reports = wait_for(lambda: (r := c.probe(2.0)) and len(r) == 3 and r)
        assert [(r["stage"], r["server"]) for r in reports] == [
            (1, "step1"),
            (2, "step2"),
            (3, "last"),
        ]
        assert c.get(c.set(b"cached")) == b"cached"
    dead = LoopClient(
        push_address=f"tcp://127.0.0.1:{free_port()}",
        pull_address=addresses["step1"],
        server_name="step1",
        timeout_s=2,
    )
    with dead, pytest.raises(TimeoutError, match=r"the last stage.*does not answer"):
        list(dead.job("foo", [b"x"]))
