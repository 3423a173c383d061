"""``palm health``: the exec probe of orchestrators."""

from __future__ import annotations

import socket

import pytest

from palm.cli import main
from palm.commands.health import check
from palm.testing import LocalMaster
from tests.apps.kit import Echo
from tests.fixtures.procs import free_port

pytestmark = pytest.mark.timeout(30)


def test_a_master_answers_and_lists_the_workers_of_this_host(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with LocalMaster() as cluster:
        db = cluster.endpoints.db
        assert check(db) is None
        assert "lists no worker" in str(check(db, listed_host=socket.gethostname()))
        cluster.add_worker(Echo)
        assert check(db, listed_host=socket.gethostname()) is None
        assert "lists no worker of elsewhere" in str(check(db, listed_host="elsewhere"))
        assert main(["health", "--listed", db]) == 0
        assert f"{db}: ok" in capsys.readouterr().out


def test_silence_is_unhealthy(capsys: pytest.CaptureFixture[str]) -> None:
    nobody = f"tcp://127.0.0.1:{free_port()}"
    assert "no answer" in str(check(nobody, timeout_s=0.3))
    assert main(["health", "--timeout-s", "0.3", nobody]) == 1
    assert "no answer" in capsys.readouterr().out
