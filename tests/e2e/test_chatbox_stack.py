"""examples/chatbox for real: ``palm up`` with Redis, 2 gateway processes behind
Envoy (round robin) and 2 function workers; the recommender trained on those
workers; 50 users at once; a worker SIGKILLed mid-turn; bad input; and a full
dialog in headless Chromium, with a screenshot."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis

from examples.chatbox.train import train
from palm.ops.cluster import read_lines
from tests.fixtures.http import request, wait_until
from tests.fixtures.procs import Processes, alive

pytestmark = pytest.mark.timeout(240)

ROOT = Path(__file__).resolve().parents[2]
SLOW_WORD = "zzslow"
SCRIPT = ("", "something funny with Bill Murray", "no preference", "PG", "no", "yes", "bye")


@dataclass
class Deployment:
    url: str
    redis: redis.Redis
    pids: dict[str, int]
    proc: subprocess.Popen[str]


CONFIG = """\
name: chatbox-test
redis: null
host: 127.0.0.1
notes: ["redis at {redis}"]
edge:
  port: 0
  load_balancer: round_robin
  gateway_workers: 2
  auth: open
  route_timeout_s: 60
services:
  chatbox:
    kind: function
    functions:
      agent: examples.chatbox.app:service1
      listener: examples.chatbox.app:service1
      als: examples.chatbox.train:als_step
    workers: 2
    route: /chatbox
    page: examples.chatbox:web
    example: '{"text": "hi"}'
"""


@pytest.fixture(scope="module")
def chatbox() -> Iterator[Deployment]:
    """``palm up`` of a chatbox-only deployment; stopped by SIGTERM, then SIGKILL
    by PID for whatever is left of its process tree."""
    directory = Path(tempfile.mkdtemp(prefix="palm-chatbox-"))
    config = directory / "palm.yaml"
    config.write_text(CONFIG)
    tracker = Processes(ROOT)
    env = {"CHATBOX_TEST_SLOW_WORD": SLOW_WORD, "CHATBOX_TEST_SLOW_S": "4"}
    cmd = [sys.executable, "-m", "palm", "--log-level", "WARNING", "up", "--config", str(config)]
    proc = tracker.start([*cmd, "--port", "0"], env=env)
    tree: list[psutil.Process] = []
    try:
        lines = read_lines(proc, lambda line: line.startswith("redis at "), 120)
        url = next(line.split()[-1] for line in lines if line.startswith("palm up: edge at "))
        redis_url = next(line.split()[-1] for line in lines if "redis at " in line)
        (line,) = [line for line in lines if line.strip().startswith("processes: ")]
        pids = json.loads(line.split("processes: ", 1)[1])
        tree = psutil.Process(proc.pid).children(recursive=True)
        yield Deployment(url, redis.Redis.from_url(redis_url), pids, proc)
    finally:
        tree += psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        _gone, left = psutil.wait_procs(tree, timeout=10)
        for child in left:
            child.kill()
        tracker.kill_all()
        shutil.rmtree(directory, ignore_errors=True)


def say(url: str, text: str, session: str, turn: str | None = None) -> dict[str, Any]:
    """One turn as the page sends it, retried (same turn id) while the answer is 5xx."""
    body = json.dumps({"text": text, "id": session, "turn": turn or uuid.uuid4().hex})
    for _attempt in range(10):
        reply = request(url, "POST", "/chatbox/agent", body.encode(), timeout_s=60)
        if reply.status < 500:
            break
        time.sleep(0.5)
    assert reply.status == 200, reply
    answer: dict[str, Any] = json.loads(reply.body)
    return answer


def dialog_of(url: str) -> list[dict[str, Any]]:
    session, replies = "-1", []
    for text in SCRIPT:
        turn = uuid.uuid4().hex
        reply = say(url, text, session, turn)
        assert reply["response"]["turn"] == turn  # the answer to this message
        assert session in ("-1", reply["userid"])  # of this session
        session = reply["userid"]
        replies.append(reply)
    return replies


def worker_pids(deployment: Deployment) -> set[int]:
    pool = psutil.Process(deployment.pids["workers:chatbox"])
    return {child.pid for child in pool.children(recursive=True)}


def test_the_recommender_trains_on_the_workers_and_every_worker_reads_it(chatbox):
    result = train(chatbox.url, rounds=4)
    assert set(result["workers"]) <= worker_pids(chatbox) and result["workers"]
    assert result["rmse"] < 0.8
    assert chatbox.redis.get("chatbox:model:version").decode() == result["published"]
    models = set()
    for _ in range(6):  # round robin over both gateways, whichever worker takes the turn
        replies = dialog_of(chatbox.url)
        models.add(replies[3]["response"]["model"])
    assert models == {result["published"]}


def test_fifty_users_in_parallel_each_get_their_own_dialog(chatbox):
    with ThreadPoolExecutor(50) as pool:
        dialogs = list(pool.map(lambda _: dialog_of(chatbox.url), range(50)))
    sessions = {d[0]["userid"] for d in dialogs}
    assert len(sessions) == 50
    for replies in dialogs:
        assert replies[3]["response"]["card"]["title"]
        assert replies[5]["response"]["text"].startswith("Great choice")
        assert replies[6]["signal"] == "end"
        state = json.loads(chatbox.redis.get(f"chatbox:session:{replies[0]['userid']}"))
        assert state["turns"] == len(SCRIPT)
        assert [h["user"] for h in state["history"]] == list(SCRIPT)
        assert 0 < chatbox.redis.ttl(f"chatbox:session:{replies[0]['userid']}") <= 1800


def test_a_worker_killed_mid_turn_loses_and_duplicates_no_turn(chatbox):
    session = say(chatbox.url, "", "-1")["userid"]
    say(chatbox.url, "comedy", session)
    turn = uuid.uuid4().hex
    text = f"{SLOW_WORD} Bill Murray"
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(say, chatbox.url, text, session, turn)
        marker = f"chatbox:test:slow:{turn}"
        wait_until(lambda: chatbox.redis.get(marker) is not None, 30, "the turn on a worker")
        victim = int(chatbox.redis.get(marker))
        assert victim in worker_pids(chatbox)
        os.kill(victim, signal.SIGKILL)
        reply = pending.result(timeout=120)
    assert not alive(victim)
    assert reply["userid"] == session and reply["response"]["turn"] == turn
    assert "director" in reply["response"]["text"]  # the actor was taken: the next question
    state = json.loads(chatbox.redis.get(f"chatbox:session:{session}"))
    assert state["turns"] == 3
    assert [h["user"] for h in state["history"]] == ["", "comedy", text]
    again = say(chatbox.url, text, session, turn)  # the client's retry of that turn
    assert again == reply
    state = json.loads(chatbox.redis.get(f"chatbox:session:{session}"))
    assert state["turns"] == 3


def test_concurrent_turns_of_one_session_never_interleave(chatbox):
    session = say(chatbox.url, "", "-1")["userid"]
    # each one a miss: a counter that must add up. The two slow turns hold both
    # workers between reading the session and writing it, so they overlap for sure
    texts = [f"{SLOW_WORD} blorp a", f"{SLOW_WORD} blorp b"] + [f"blorp {i}" for i in range(6)]
    with ThreadPoolExecutor(len(texts)) as pool:
        replies = list(pool.map(lambda text: say(chatbox.url, text, session), texts))
    assert {r["userid"] for r in replies} == {session}
    state = json.loads(chatbox.redis.get(f"chatbox:session:{session}"))
    assert state["turns"] == 1 + len(texts) and state["misses"] == len(texts)
    assert sorted(h["user"] for h in state["history"][1:]) == sorted(texts)


@pytest.mark.parametrize(
    "body",
    [b"", b"\xff\xfe\x00\x01\x02", os.urandom(3000), b"x" * 200_000, b"{not json", b"[]"],
)
def test_bad_input_gets_a_polite_reply_or_a_4xx_never_a_5xx(chatbox, body):
    reply = request(chatbox.url, "POST", "/chatbox/agent", body, timeout_s=60)
    assert reply.status < 500, reply
    if reply.status == 200:
        assert json.loads(reply.body)["response"]["text"]


def test_an_unknown_session_starts_a_new_one(chatbox):
    reply = say(chatbox.url, "hello", "no-such-session")
    assert reply["userid"] != "no-such-session" and "expired" in reply["response"]["text"]


def test_a_full_dialog_in_headless_chromium_through_envoy(chatbox, tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        pytest.skip("needs chromium and chromium-driver (scripts/system-deps installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=390,844"):
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
    service = webdriver.ChromeService(executable_path=driver_path)
    browser = webdriver.Chrome(options=options, service=service)
    try:
        browser.get(f"{chatbox.url}/chatbox/")
        wait = WebDriverWait(browser, 60)

        def bot_count() -> int:
            return len(browser.find_elements(By.CSS_SELECTOR, ".bubble.bot"))

        def send(text: str) -> None:
            before = bot_count()
            box = browser.find_element(By.ID, "input")
            box.send_keys(text)
            browser.find_element(By.ID, "send").click()
            if SLOW_WORD in text:  # a turn that takes seconds: the indicator shows meanwhile
                wait.until(lambda b: b.find_element(By.ID, "typing").is_displayed())
                assert bot_count() == before
            wait.until(lambda _: bot_count() > before)

        wait.until(lambda _: bot_count() >= 1)
        assert "What kind of movie" in browser.find_element(By.CSS_SELECTOR, ".bubble.bot").text
        for text in (f"{SLOW_WORD} something funny with Bill Murray", "no preference", "PG"):
            send(text)
        card = wait.until(lambda b: b.find_element(By.CSS_SELECTOR, ".card h2"))
        assert "(" in card.text
        assert "Bill Murray" in browser.find_element(By.CSS_SELECTOR, ".card").text
        assert browser.find_elements(By.CSS_SELECTOR, ".bubble.user")
        # phone-sized: the page is no wider than the window, nothing scrolls sideways
        assert browser.execute_script("return document.documentElement.scrollWidth") <= 500
        assert not browser.find_element(By.ID, "typing").is_displayed()
        send("yes")
        texts = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".bubble.bot")]
        assert any(text.startswith("Great choice") for text in texts)
        # the poll every 2 s brings the queued follow-up
        passive = wait.until(lambda b: b.find_element(By.CSS_SELECTOR, ".bubble.passive"))
        assert passive.text.startswith("By the way")
        shot = tmp_path / "chatbox.png"
        assert browser.save_screenshot(str(shot))
        data = shot.read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 5_000
        if os.environ.get("CHATBOX_SCREENSHOT"):  # how the README's picture was made
            shutil.copy(shot, os.environ["CHATBOX_SCREENSHOT"])
    finally:
        browser.quit()


def test_the_puma_port_serves_the_dialog_from_redis_and_stops_what_it_started(procs):
    proc = procs.start([sys.executable, "-m", "examples.chatbox.app"])
    try:
        lines = read_lines(proc, lambda line: "envoy admin" in line, 120)
        url = next(line.split()[-1] for line in lines if "PUMA edge listening at" in line)
        tree = psutil.Process(proc.pid).children(recursive=True)
        session, turns = "-1", []
        for text in SCRIPT[:6]:  # round robin: the turns cross both gateway processes
            body = json.dumps({"text": text, "id": session, "turn": uuid.uuid4().hex}).encode()
            reply = request(url, "POST", "/agent/call", body, timeout_s=60)
            assert reply.status == 200, reply
            answer = json.loads(reply.body)
            session = answer["userid"]
            turns.append(answer)
        assert turns[3]["response"]["card"]["title"] and turns[5]["signal"] == "idle"
        poll = json.dumps({"mode": "poll", "id": session}).encode()
        queued = json.loads(request(url, "POST", "/listener/call", poll, timeout_s=60).body)
        assert queued["response"]["messages"][0]["text"].startswith("By the way")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    _gone, alive = psutil.wait_procs(tree, timeout=20)
    assert alive == []
