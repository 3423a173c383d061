"""``POST /jobs/map/...``: a map as a background job whose ``GET /jobs/<id>`` shows
its progress moving; the gateway's Flask app with a real master, two workers and a
real redis-server."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from palm.gateway.app import create_app
from tests.fixtures.edge import parallel_service
from tests.fixtures.http import wait_until

pytest_plugins = ["tests.fixtures.edge"]

pytestmark = pytest.mark.timeout(120)

ITEMS = 60
NAP_S = 0.05  # 60 naps on 2 workers: about 1.5 s, progress written every 0.2 s


@pytest.fixture(scope="module")
def service() -> Iterator[dict[str, Any]]:
    with parallel_service(2) as spec:
        yield spec


@pytest.fixture
def client(redis_url: str, service: dict[str, Any]) -> Any:
    app = create_app(
        {
            "redis_url": redis_url,
            "cluster": "mapjobs",
            "auth": "open",
            "services": {"pool": service},
        }
    )
    yield app.test_client()
    app.extensions["palm"]["pool"].close()
    app.extensions["palm"]["jobs"].close()


def test_a_map_job_reports_its_progress_while_it_runs(client: Any) -> None:
    accepted = client.post("/jobs/map/pool/nap", data=json.dumps([NAP_S] * ITEMS))
    assert accepted.status_code == 202
    job_id = accepted.get_json()["job_id"]
    assert accepted.get_json()["total"] == ITEMS
    assert accepted.headers["Location"] == f"/jobs/{job_id}"
    seen: list[tuple[str, int]] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        body = client.get(f"/jobs/{job_id}").get_json()
        assert body["kind"] == "map" and body["progress"]["total"] == ITEMS
        seen.append((body["status"], body["progress"]["done"]))
        if body["status"] != "pending":
            break
        time.sleep(0.02)
    assert seen[-1] == ("done", ITEMS), seen
    counts = [done for _status, done in seen]
    assert counts == sorted(counts)  # never backwards
    # it moved while pending: counts strictly between nothing and everything
    assert any(0 < done < ITEMS for status, done in seen if status == "pending"), seen
    result = client.get(f"/jobs/{job_id}/result")
    assert result.status_code == 200 and result.mimetype == "application/json"
    assert len(result.get_json()) == ITEMS


def test_a_failed_map_job_keeps_its_progress_and_error(client: Any) -> None:
    accepted = client.post("/jobs/map/pool/fail", data=b'["a", "b"]')
    job_id = accepted.get_json()["job_id"]

    def finished() -> bool:
        return bool(client.get(f"/jobs/{job_id}").get_json()["status"] != "pending")

    wait_until(finished, 30, "the map job ends")
    body = client.get(f"/jobs/{job_id}").get_json()
    assert body["status"] == "failed" and body["http_status"] == 502
    assert body["remote_type"] == "KeyError"
    assert body["progress"] == {"done": 0, "total": 2}


def test_a_map_job_refuses_what_map_refuses(client: Any) -> None:
    assert client.post("/jobs/map/pool/nap", data=b"not json").status_code == 400
    assert client.post("/jobs/map/nowhere/nap", data=b"[1]").status_code == 404
    # single jobs keep no progress
    job_id = client.post("/jobs/pool/upper", data=b"x").get_json()["job_id"]
    wait_until(lambda: client.get(f"/jobs/{job_id}").get_json()["status"] == "done", 30)
    assert "progress" not in client.get(f"/jobs/{job_id}").get_json()
