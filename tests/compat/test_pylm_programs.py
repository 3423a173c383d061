"""pylm 0.14-style programs, with only the import renamed, run on palm.

Each scenario is a set of small programs in ``tests/compat/programs/<scenario>``,
written the way pylm's documentation wrote them; each runs as its own process
(servers and workers in the background, the client to its end), and the test
checks what the client printed.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from tests.fixtures.procs import wait_for

Make = Callable[[str], Any]

pytestmark = pytest.mark.timeout(90)


def test_a_single_server_answers_jobs_and_evals(scenario: Make) -> None:
    s = scenario("single")
    s.start("server")
    lines = s.run("client")
    assert lines == [f"{i} you sent me a message" for i in range(10)] + [
        "eval you sent me only one",
        "twice you sent me listed",
    ]


def test_a_pylm_client_pushes_to_the_server_input_and_hears_its_pub_address(
    scenario: Make,
) -> None:
    s = scenario("single")
    s.start("server")
    assert s.run("explicit_client") == ["you sent me explicit"]
    # palm's old meaning of push_address (where results come from) is refused at once
    (line,) = s.run("swapped_client", timeout_s=30)
    assert line.startswith("refused: push_address") and "sub_address" in line


def test_a_parallel_master_spreads_jobs_over_its_workers(scenario: Make) -> None:
    s = scenario("parallel")
    s.start("master")
    s.start("worker", "w1")
    s.start("worker", "w2")
    lines = s.run("client")
    assert sorted(line.split(" processed ")[1] for line in lines) == sorted(
        f"item {i}" for i in range(20)
    )
    assert {line.split(" processed ")[0] for line in lines} <= {"w1", "w2"}


def test_the_cache_is_set_and_got_by_the_client_and_read_by_workers(scenario: Make) -> None:
    s = scenario("cache")
    s.start("master")
    s.start("worker", "w1")
    assert s.run("client") == [
        "key cached",
        "get from the cache",
        *["from the cache and a message"] * 3,
    ]


def test_scatter_makes_two_jobs_of_each_message(scenario: Make) -> None:
    s = scenario("scatter")
    s.start("master")
    s.start("worker", "w1")
    assert sorted(s.run("client")) == sorted(
        f"{p} {side}".upper() for p in "abc" for side in ("left", "right")
    )


def test_gather_joins_four_results_into_one_with_change_payload(scenario: Make) -> None:
    s = scenario("gather")
    s.start("master")
    s.start("worker", "w1")
    lines = s.run("client")
    assert len(lines) == 2
    assert sorted(p for line in lines for p in line.split("+")) == [str(i) for i in range(8)]


def test_a_master_streams_into_a_pipeline(scenario: Make) -> None:
    s = scenario("master_pipeline")
    s.start("master")
    s.start("worker", "w1")
    s.start("pipeline")
    assert sorted(s.run("client")) == [
        f"worker saw {p}, then the pipeline" for p in ("a", "b", "c", "d")
    ]


def test_a_server_streams_into_a_hub(scenario: Make) -> None:
    s = scenario("server_hub")
    s.start("server")
    s.start("hub")
    s.start("worker", "w1")
    assert sorted(s.run("client")) == [
        f"server saw {p}, then a hub worker" for p in ("1", "2", "3")
    ]


def test_a_server_streams_into_a_pipeline(scenario: Make) -> None:
    s = scenario("server_pipeline")
    s.start("server")
    s.start("pipeline")
    assert s.run("client")[-1] == "eval server saw z, then the pipeline"
    assert sorted(s.run("client")[:2]) == [
        "server saw x, then the pipeline",
        "server saw y, then the pipeline",
    ]
    # no sub_address for a pipelined server: refused at once, not a wait for nothing
    (line,) = s.run("bare_client")
    assert line.startswith("refused: server 'server' is pipelined") and "sub_address" in line


def test_a_tee_whose_branch_returns_none_delivers_nothing_for_it(scenario: Make) -> None:
    s = scenario("tee")
    for program in ("server", "keep", "drop", "sink"):
        s.start(program)
    assert sorted(s.run("client")) == sorted(
        [
            "kept one (sunk)",
            "kept skip two (sunk)",
            "kept three (sunk)",
            "passed one (sunk)",
            "passed three (sunk)",
        ]
    )
    # log_level=logging.WARNING: the pipelines say nothing at INFO
    assert " - INFO - " not in s.output("keep") + s.output("drop")


def test_log_level_debug_shows_what_a_server_does(scenario: Make) -> None:
    s = scenario("single")
    s.start("server")
    s.run("explicit_client")
    assert " - palm.my_server - DEBUG - Got a message" in s.output("server")
    assert re.search(r" - palm\.my_server - INFO - my_server serving \['foo'\]", s.output("server"))


def test_handle_stream_sends_to_two_pipelines_that_stream_into_a_sink(scenario: Make) -> None:
    s = scenario("streams")
    s.start("server")
    s.start("pipelines", "even")
    s.start("pipelines", "odd")
    s.start("sink")
    assert sorted(s.run("client")) == sorted(
        [f"{i} is even via evens, sunk" for i in (0, 2, 4)]
        + [f"{i} via odds, sunk" for i in (1, 3, 5)]
    )


def test_a_mux_worker_answers_each_message_with_several_results(scenario: Make) -> None:
    s = scenario("mux")
    s.start("master")
    s.start("worker", "w1")
    lines = s.run("client")
    assert sorted(lines[:6]) == sorted(f"{p} #{i}" for p in "ab" for i in range(3))
    assert lines[6] == "eval ['c #0', 'c #1', 'c #2']"
    # without messages=, the job ends when every result of every job is in
    assert lines[7] == "until the end " + str(sorted(f"{p} #{i}" for p in "de" for i in range(3)))


def test_messages_stops_the_server_and_it_logs_info_with_a_timestamp(scenario: Make) -> None:
    s = scenario("limits")
    server = s.start("server")
    assert s.run("client") == ["cba", "fed", "ihg"]
    assert server.wait(30) == 0
    out = s.output("server")
    assert out.rstrip().endswith("server done")
    stamp = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} - palm\.limited - INFO - handling abc$"
    assert re.search(stamp, out, re.M), out


def test_hooks_that_fail_answer_an_error_and_the_master_keeps_serving(scenario: Make) -> None:
    s = scenario("hooks")
    master = s.start("master")
    s.start("worker", "w1")
    lines = s.run("client")
    assert lines[:3] == [
        "error bad BadResult handle_stream failed: TypeError: handle_stream returned "
        "(bytes, int); it returns a topic (str), None for the client, or (topic, message)",
        "error boom BadResult scatter failed: ValueError: scatter cannot take boom",
        "error crash BadResult gather failed: RuntimeError: gather cannot take CRASH",
    ]
    assert lines[3] == "next FINE"
    assert master.poll() is None
    wait_for(lambda: "the gather hook failed" in s.output("master"), 10)


def test_a_server_started_with_a_wrong_address_combination_says_which(tmp_path: Any) -> None:
    code = (
        "from palm.servers import Server\n"
        "Server('s', 'tcp://127.0.0.1:1', 'tcp://127.0.0.1:2', pub_address='tcp://127.0.0.1:3',"
        " push_address='tcp://127.0.0.1:4')\n"
    )
    import sys

    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "ConfigError" in proc.stderr
    assert "pub_address" in proc.stderr and "push_address" in proc.stderr


def test_messages_stops_a_worker(scenario: Make) -> None:
    s = scenario("limits")
    s.start("master")
    worker = s.start("worker")
    assert s.run("worker_client") == ["ONE", "TWO"]
    assert worker.wait(30) == 0
    assert s.output("worker").rstrip().endswith("worker done")
