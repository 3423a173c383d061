"""examples/chatbox in process: understanding, the dialog, stores, bad input,
the page mount, and the monolith -> palm diff the README quotes."""

from __future__ import annotations

import ast
import difflib
import json
import threading
from pathlib import Path

import numpy as np
import pytest

from examples.chatbox import dialog
from examples.chatbox.catalog import load_catalog
from examples.chatbox.recommend import baseline_model, load_ratings, rmse, solve_rows
from examples.chatbox.store import MemoryStore
from examples.chatbox.understand import stem, understand
from palm.gateway.guide import guide
from palm.gateway.pages import PageMount, resolve_page
from palm.ops.config import load_deployment

ROOT = Path(__file__).resolve().parents[2]
CHATBOX = ROOT / "examples" / "chatbox"


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> dialog.Resources:
    """Resources with an in-memory store, whatever the environment says."""
    monkeypatch.delenv("PALM_REDIS_URL", raising=False)
    monkeypatch.delenv("CHATBOX_REDIS_URL", raising=False)
    return dialog.initResources(MemoryStore())


def talk(*texts: str, session: str = "-1") -> list[tuple[dict, str, int, str]]:
    replies = []
    for i, text in enumerate(texts):  # a turn id of its own for each message
        message = {"text": text, "id": session, "turn": f"{session}-{i}-{text}"}
        reply = dialog.dialogueCtrl(json.dumps(message))
        session = reply[1]
        replies.append(reply)
    return replies


def test_the_catalog_has_300_real_films_with_every_fact():
    catalog = load_catalog()
    assert len(catalog) >= 300
    assert len({f.title for f in catalog.films}) == len(catalog)
    for film in catalog.films:
        assert film.title and 1900 < film.year < 2030 and film.genres and film.director
        assert film.cast and film.rating in ("G", "PG", "PG-13", "R") and film.plot.endswith(".")
    ratings = load_ratings()
    assert ratings.n_films == len(catalog) and set(np.unique(ratings.stars)) <= {1, 2, 3, 4, 5}
    assert (CHATBOX / "data" / "ratings.npz").stat().st_size < 1_000_000


def test_free_text_fills_several_slots_at_once():
    catalog = load_catalog()
    parse = understand("something funny with Bill Murray", catalog)
    assert parse.genres == ["comedy"] and parse.actors == ["Bill Murray"]
    parse = understand("sci-fi with Harrison Ford directed by Ridley Scott, PG-13 please", catalog)
    assert parse.genres == ["sci-fi"] and parse.actors == ["Harrison Ford"]
    assert parse.directors == ["Ridley Scott"] and parse.rating == "PG-13"
    assert understand("a scary one, not a comedy", catalog).not_genres == ["comedy"]
    assert understand("Tom Hankss", catalog, "actor").actors == ["Tom Hanks"]  # fuzzy
    assert understand("by spielberg", catalog, "director").directors == ["Steven Spielberg"]
    assert understand("no preference", catalog).answer == "any"
    assert understand("nope", catalog).answer == "no"
    assert understand("yes please", catalog).answer == "yes"
    assert understand("goodbye", catalog).bye
    assert stem("comedies") == "comedi" and stem("scary") == "scari"


def test_a_full_dialog_reaches_a_recommendation_declines_accepts_and_says_goodbye(fresh):
    replies = talk("", "something funny with Bill Murray", "no preference", "PG", "no", "yes")
    session = replies[0][1]
    dialog.dialogueIdle(session)  # what the servers do after a turn that is not "listen"
    replies += talk("bye", session=session)
    texts = [r[0]["text"] for r in replies]
    assert "What kind of movie" in texts[0]
    assert "director" in texts[1]  # genre and actor filled at once
    assert "rating" in texts[2]
    first, second = replies[3][0]["card"], replies[4][0]["card"]
    assert texts[3].startswith("Got it. How about ") and first["rating"] == "PG"
    assert "Bill Murray" in first["cast"] and "comedy" in first["genres"]
    assert second["title"] != first["title"] and "Bill Murray" in second["cast"]
    assert texts[5].startswith("Great choice") and replies[5][3] == "idle"
    assert replies[6][0]["text"] == dialog.end_dialogue and replies[6][3] == "end"
    assert all(r[1] == session for r in replies)
    (passive,) = dialog.poll(session)
    assert passive["card"]["title"] != second["title"]
    assert dialog.poll(session) == []


def test_nonsense_gets_a_clarifying_question_and_an_unknown_session_a_new_one(fresh):
    replies = talk("", "blorp zzz qwerty")
    assert "didn't catch a genre" in replies[1][0]["text"]
    assert replies[1][0]["step"] == "genre"
    reply, session, _, _ = dialog.dialogueCtrl(json.dumps({"text": "hi", "id": "gone"}))
    assert session != "gone" and "expired" in reply["text"]
    reply, _, _, _ = dialog.dialogueCtrl(json.dumps({"text": "Zorbo Quux", "id": session}))
    reply, _, _, _ = dialog.dialogueCtrl(json.dumps({"text": "drama", "id": session}))
    reply, _, _, _ = dialog.dialogueCtrl(json.dumps({"text": "Zorbo Quux", "id": session}))
    assert "couldn't find 'Zorbo Quux'" in reply["text"]


@pytest.mark.parametrize(
    "body, says",
    [
        (b"", "What kind of movie"),  # a new session's greeting
        (b"\xff\xfe\x00\x01binary", "only read text"),
        (json.dumps({"text": "x" * 5000}).encode(), "under 1000 characters"),
        (b"y" * 20000, "under 1000 characters"),
        (b"[1, 2, 3]", "What kind of movie"),
        (b'{"text": 12, "id": ["a"], "turn": {}}', ""),
        (7, ""),
    ],
)
def test_bad_input_gets_a_polite_reply(fresh, body, says):
    reply, _userid, _n, signal = dialog.dialogueCtrl(body)
    assert isinstance(reply["text"], str) and says in reply["text"] and signal == "listen"


def test_a_retried_turn_gets_the_same_answer_and_moves_the_dialog_once(fresh):
    first = talk("", "comedy")
    session = first[0][1]
    message = json.dumps({"text": "Bill Murray", "id": session, "turn": "same"})
    once = dialog.dialogueCtrl(message)
    again = dialog.dialogueCtrl(message)
    assert once[0] == again[0]
    state = fresh.store.load(session)
    assert state is not None and state["turns"] == 3
    assert [h["user"] for h in state["history"]].count("Bill Murray") == 1


def test_turns_of_one_session_never_interleave(fresh):
    session = talk("")[0][1]
    barrier = threading.Barrier(8)

    def one(i: int) -> None:
        barrier.wait()
        dialog.dialogueCtrl(json.dumps({"text": "hmm", "id": session, "turn": f"t{i}"}))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    state = fresh.store.load(session)
    assert state is not None and state["turns"] == 9 and state["misses"] == 8


def test_als_blocks_fit_the_ratings_better_than_the_mean():
    ratings = load_ratings()
    films = np.random.default_rng(0).normal(0, 0.1, (ratings.n_films, 8))
    for _ in range(3):
        users = np.concatenate(
            [
                solve_rows(range(s, min(s + 700, ratings.n_users)), ratings.by_user, films,
                           ratings.mean, 0.1)
                for s in range(0, ratings.n_users, 700)
            ]
        )  # fmt: skip
        films = solve_rows(range(ratings.n_films), ratings.by_film, users, ratings.mean, 0.1)
    flat = float(np.sqrt(np.mean((ratings.stars - ratings.mean) ** 2)))
    assert rmse(ratings, users, films, ratings.mean) < 0.8 * flat
    model = baseline_model(ratings)
    ranked = model.rank([0, 1, 2], declined=[])
    assert sorted(ranked) == [0, 1, 2]


def test_the_page_mount_serves_the_page_and_nothing_else():
    directory = resolve_page("examples.chatbox:web")
    calls: list[str] = []

    def app(environ, start_response):
        calls.append(environ["PATH_INFO"])
        start_response("401 Unauthorized", [])
        return [b"key needed"]

    mount = PageMount(app, {"chatbox": directory})

    def get(path: str, method: str = "GET") -> tuple[str, bytes]:
        status: list[str] = []
        body = b"".join(
            mount({"PATH_INFO": path, "REQUEST_METHOD": method}, lambda s, h: status.append(s))
        )
        return status[0], body

    assert get("/chatbox/")[0] == "200 OK" and b"chat.js" in get("/chatbox/")[1]
    assert get("/chatbox/chat.css")[0] == "200 OK"
    for path in ("/chatbox/../palm.yaml", "/chatbox/x/chat.js", "/other/", "/chatbox/agent"):
        assert get(path)[0].startswith("401"), path
    assert get("/chatbox/", "POST")[0].startswith("401")
    with pytest.raises(Exception, match=r"index\.html"):
        resolve_page("examples.chatbox:data")


def code_lines(path: Path) -> list[str]:
    """A module's lines after its docstring."""
    source = path.read_text()
    return source.splitlines()[ast.parse(source).body[0].end_lineno or 0 :]


def test_the_port_onto_palm_adds_nine_lines_to_the_monolith():
    diff = list(
        difflib.unified_diff(code_lines(CHATBOX / "monolith.py"), code_lines(CHATBOX / "app.py"))
    )[2:]
    added = [line for line in diff if line.startswith("+")]
    removed = [line for line in diff if line.startswith("-")]
    assert len(added) == 9, added
    assert len(removed) >= 40
    readme = (ROOT / "README.md").read_text()
    assert f"{len(added)} lines added" in readme and f"{len(removed)} removed" in readme


def test_palm_up_prints_the_page_url_with_the_key_in_the_fragment():
    config = load_deployment(ROOT / "palm.yaml")
    assert config.services["chatbox"].page == "examples.chatbox:web"
    text = guide(config, "http://127.0.0.1:8080", api_key="k3y")
    assert "  http://127.0.0.1:8080/chatbox/#key=k3y" in text.splitlines()
    assert "http://127.0.0.1:8080/chatbox/\n" in guide(config, "http://127.0.0.1:8080") + "\n"
