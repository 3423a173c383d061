"""The dialog: greeting -> genre -> actor -> director -> rating -> recommendation.

The three calls of PUMA's ``dialogueCtrl`` module, in Python 3 and with local
understanding (:mod:`.understand`) and ranking (:mod:`.recommend`):

``initResources()``
    load the catalog, the ratings and the model; pick the store (Redis when
    ``CHATBOX_REDIS_URL`` or ``PALM_REDIS_URL`` is set, else process memory).
``dialogueCtrl(data) -> (response, userid, passiveLen, signal)``
    one turn. ``data`` is JSON ``{"text", "mode", "id", "turn"}``; ``id`` "-1"
    (or unknown, or expired) starts a session; ``turn`` is the client's id for
    this message (a retry with the same id gets the same answer). ``response``
    is ``{"text", "card", "turn", "step"}``; ``signal`` is ``listen`` (waiting
    for the user), ``idle`` (a follow-up may be queued) or ``end``.
``dialogueIdle(userid)``
    queue the "passive" follow-up that the page's poll picks up.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import traceback
import uuid
from dataclasses import dataclass
from typing import Any

from examples.chatbox.catalog import Catalog, Film, load_catalog
from examples.chatbox.recommend import Model, baseline_model, load_ratings
from examples.chatbox.store import MemoryStore, RedisStore, Store
from examples.chatbox.understand import Parse, understand

__all__ = [
    "MAX_BODY",
    "MAX_TEXT",
    "dialogueCtrl",
    "dialogueIdle",
    "end_dialogue",
    "initResources",
    "poll",
    "resources",
    "turn",
]

MAX_TEXT = 1000
MAX_BODY = 16 * 1024
ORDER = ("genre", "actor", "director", "rating")
HISTORY = 40
MODEL_KEY = "chatbox:model"
end_dialogue = "Goodbye! Enjoy the movie."
GREETING = "Hi, I'm Chatbox. I'll help you pick a movie."
QUESTIONS = {
    "genre": "What kind of movie are you in the mood for? (comedy, drama, sci-fi, ...)",
    "actor": "Any actor or actress you'd like to see?",
    "director": "Do you have a favourite director?",
    "rating": "Which rating suits you: G, PG, PG-13 or R?",
}
CLARIFY = {
    "genre": "Sorry, I didn't catch a genre. I know {genres}. Which one, or 'no preference'?",
    "actor": "I couldn't find {name}in my catalog. Try a full name like 'Tom Hanks', "
    "or say 'no preference'.",
    "director": "I couldn't find {name}among the directors I know. Try a full name like "
    "'Steven Spielberg', or say 'no preference'.",
    "rating": "Sorry, which rating: G, PG, PG-13 or R? Or 'no preference'.",
}
WHO = {"actor": "Great, who?", "director": "Sure, which director?"}


@dataclass
class Resources:
    catalog: Catalog
    store: Store
    model: Model
    model_version: str = "baseline"


_lock = threading.Lock()
_resources: Resources | None = None


def initResources(store: Store | None = None) -> Resources:
    """Load the catalog, ratings and model; choose the store."""
    global _resources
    url = os.environ.get("CHATBOX_REDIS_URL") or os.environ.get("PALM_REDIS_URL")
    if store is None:
        store = RedisStore(url) if url else MemoryStore()
    _resources = Resources(load_catalog(), store, baseline_model(load_ratings()))
    return _resources


def resources() -> Resources:
    """The process's resources, loaded on first use (palm workers never call init)."""
    with _lock:
        return _resources or initResources()


def current_model(res: Resources) -> Model:
    """The model in Redis when one was trained there (re-read when it changes)."""
    if isinstance(res.store, RedisStore):
        version = res.store.redis.get(MODEL_KEY + ":version")
        if version is not None and bytes(version).decode() != res.model_version:
            raw = res.store.redis.get(MODEL_KEY)
            if raw is not None:
                res.model = Model.from_bytes(bytes(raw))
                res.model_version = res.model.version
    return res.model


def new_state(session: str) -> dict[str, Any]:
    return {
        "id": session,
        "step": "genre",
        "slots": {slot: None for slot in ORDER},
        "not_genres": [],
        "declined": [],
        "current": None,
        "accepted": None,
        "misses": 0,
        "turns": 0,
        "history": [],
    }


def say(state: dict[str, Any], text: str, card: Film | None = None) -> dict[str, Any]:
    return {"text": text, "card": card.card() if card else None, "step": state["step"]}


def fill(state: dict[str, Any], parse: Parse) -> bool:
    """Put what the message says into the slots; True when anything was new."""
    slots = state["slots"]
    new = False
    for slot, values in (
        ("genre", parse.genres),
        ("actor", parse.actors),
        ("director", parse.directors),
        ("rating", [parse.rating] if parse.rating else []),
    ):
        if values:
            slots[slot] = values[0]
            new = True
    for genre in parse.not_genres:
        if genre not in state["not_genres"]:
            state["not_genres"].append(genre)
            new = True
    return new


def candidates(catalog: Catalog, state: dict[str, Any]) -> tuple[list[int], list[str]]:
    """Films matching the slots (loosening them from the last until some match)."""
    slots = dict(state["slots"])
    dropped: list[str] = []
    excluded = set(state["declined"])
    for loosen in (None, "rating", "director", "actor", "genre"):
        if loosen is not None and slots.get(loosen) not in (None, "any"):
            slots[loosen] = "any"
            dropped.append(loosen)
        found = [
            f.index
            for f in catalog.films
            if f.index not in excluded
            and not set(f.genres) & set(state["not_genres"])
            and slots["genre"] in (None, "any", *f.genres)
            and slots["actor"] in (None, "any", *f.cast)
            and slots["director"] in (None, "any", f.director)
            and slots["rating"] in (None, "any", f.rating)
        ]
        if found:
            return found, dropped
    return [], dropped


def recommend(res: Resources, state: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    found, dropped = candidates(res.catalog, state)
    if not found:
        state["step"], state["current"] = "done", None
        return say(state, prefix + "I've run out of films for that. Say 'start over' to try again.")
    model = current_model(res)
    best = model.rank(found, state["declined"])[0]
    film = res.catalog.films[best]
    state["step"], state["current"] = "recommend", best
    note = (
        f"Nothing matched everything, so I let go of the {' and '.join(dropped)}. "
        if dropped
        else ""
    )
    cast = " and ".join(film.cast[:2])
    text = (
        f"{prefix}{note}How about {film.title} ({film.year})? {film.plot} "
        f"It stars {cast}, directed by {film.director}, rated {film.rating}. Would you like it?"
    )
    return {**say(state, text, film), "model": model.version}


def advance(res: Resources, state: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Ask for the next empty slot, or recommend when none is left."""
    for slot in ORDER:
        if state["slots"][slot] is None:
            state["step"] = slot
            return say(state, prefix + QUESTIONS[slot])
    return recommend(res, state, prefix)


def respond(res: Resources, state: dict[str, Any], text: str) -> tuple[dict[str, Any], str]:
    """One turn on ``state`` (changed in place): the reply and the signal."""
    step = state["step"]
    parse = understand(text, res.catalog, step)
    if parse.bye:
        state["step"] = "done"
        return say(state, end_dialogue), "end"
    if parse.restart:
        fresh = new_state(state["id"])
        state.update({k: v for k, v in fresh.items() if k not in ("history", "turns")})
        return advance(res, state, "Let's start over. "), "listen"
    if step in ("recommend", "done"):
        if fill(state, parse):
            state["declined"] = [] if step == "done" else state["declined"]
            return recommend(res, state, "Noted. "), "listen"
        if step == "recommend" and parse.answer == "yes":
            film = res.catalog.films[state["current"]]
            state["step"], state["accepted"] = "done", film.index
            text = f"Great choice! Enjoy {film.title}. Say 'start over' for another, or 'bye'."
            return say(state, text), "idle"
        if step == "recommend" and parse.answer in ("no", "any"):
            state["declined"].append(state["current"])
            return recommend(res, state, "OK. "), "listen"
        if step == "recommend":
            title = res.catalog.films[state["current"]].title
            return say(state, f"Would you like to watch {title}? Yes or no?"), "listen"
        return say(state, "Say 'start over' for another recommendation, or 'bye'."), "listen"
    if fill(state, parse):
        state["misses"] = 0
        if state["slots"][step] is None and parse.answer in ("any", "no"):
            state["slots"][step] = "any"
        return advance(res, state, "Got it. "), "listen"
    if parse.answer in ("any", "no"):
        state["slots"][step] = "any"
        return advance(res, state, "OK. "), "listen"
    if parse.answer == "yes" and step in WHO:
        return say(state, WHO[step]), "listen"
    if parse.hello and state["turns"] == 0:
        return say(state, f"{GREETING} {QUESTIONS[step]}"), "listen"
    state["misses"] += 1
    name = f"'{parse.unknown_name}' " if parse.unknown_name else "that name "
    clarify = CLARIFY[step].format(genres=", ".join(res.catalog.genres[:8]) + ", ...", name=name)
    if state["misses"] >= 3:
        clarify += " You can also say it all at once, like 'a comedy with Bill Murray'."
    return say(state, clarify), "listen"


def session_for(store: Store, given: str, turn_id: str) -> tuple[str, bool]:
    """The session a turn belongs to, and whether the given one had expired.

    An unknown id starts a new session whose id comes from the turn id, so the
    retry of a session's first turn lands in the same session."""
    if given not in ("", "-1") and len(given) <= 64 and store.exists(given):
        return given, False
    digest = hashlib.sha256(f"new-session:{turn_id}".encode()).hexdigest()[:32]
    return digest, given not in ("", "-1")


def slow_turn(store: Store, turn_id: str) -> None:
    """Tests only (``CHATBOX_TEST_SLOW_WORD`` set): say which process holds this turn,
    then take ``CHATBOX_TEST_SLOW_S`` seconds, so a test can kill it mid-turn."""
    if isinstance(store, RedisStore):
        store.redis.set(f"chatbox:test:slow:{turn_id}", os.getpid(), ex=120)
    time.sleep(float(os.environ.get("CHATBOX_TEST_SLOW_S", "3")))


def turn(data: dict[str, Any]) -> tuple[dict[str, Any], str, int, str]:
    """One checked turn: ``data`` has ``text``, ``id``, ``turn`` and ``mode``."""
    res = resources()
    text = str(data.get("text") or "")
    turn_id = str(data.get("turn") or uuid.uuid4().hex)[:64]
    session, expired = session_for(res.store, str(data.get("id") or "-1"), turn_id)
    signal_box: list[str] = ["listen"]

    def step(state: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
        slow_word = os.environ.get("CHATBOX_TEST_SLOW_WORD")
        if slow_word and slow_word in text:
            slow_turn(res.store, turn_id)
        prefix = ""
        if len(text) > MAX_TEXT:
            state = state or new_state(session)
            reply = say(
                state, f"That's a long message! Please keep it under {MAX_TEXT} characters."
            )
            return finish(state, text[:80] + "...", reply, "listen")
        if state is None:
            state = new_state(session)
            prefix = "Your earlier conversation expired, so let's start again. " if expired else ""
            if not understand(text, res.catalog, "genre").slots():
                reply = say(state, f"{prefix}{GREETING} {QUESTIONS['genre']}")
                return finish(state, text, reply, "listen")
        if not text.strip() and data.get("mode") == "start":
            reply = say(state, f"Welcome back! {QUESTIONS.get(state['step'], '')}".strip())
            return finish(state, text, reply, "listen")
        if not text.strip():
            reply = say(state, "Say something, for example 'a comedy with Bill Murray'.")
            return finish(state, text, reply, "listen")
        reply, signal = respond(res, state, text)
        reply["text"] = prefix + reply["text"]
        return finish(state, text, reply, signal)

    def finish(
        state: dict[str, Any], said: str, reply: dict[str, Any], signal: str
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        state["turns"] += 1
        state["last_signal"] = signal
        state["history"] = [*state["history"], {"user": said, "bot": reply["text"]}][-HISTORY:]
        reply.update(turn=turn_id, signal=signal)
        return state, reply

    reply = res.store.run_turn(session, turn_id, step)
    signal_box[0] = reply.get("signal", "listen")
    return reply, session, res.store.passive_len(session), signal_box[0]


def dialogueCtrl(data: str | bytes | Any) -> tuple[dict[str, Any], str, int, str]:
    """PUMA's entry point: a JSON message in; (response, userid, passiveLen, signal).

    Never raises: text that is not UTF-8, a message over :data:`MAX_BODY`
    bytes or a failure on our side get a polite reply and change no session.
    ``mode`` "poll" answers the session's queued passive messages instead."""
    if isinstance(data, dict):  # an item of a map call arrives as its JSON value
        data = json.dumps(data)
    if not isinstance(data, str | bytes):
        data = str(data)
    if len(data) > MAX_BODY:
        return say_only(f"That's a long message! Please keep it under {MAX_TEXT} characters.")
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            return say_only("Sorry, I can only read text. Could you type that again?")
    try:
        message = json.loads(data)
    except ValueError:
        message = None
    if not isinstance(message, dict):  # plain text: a message without a session
        message = {"text": data}
    userid = str(message.get("id") or "-1")[:64]
    try:
        if message.get("mode") == "poll":
            return {"messages": poll(userid), "text": ""}, userid, 0, "listen"
        return turn(message)
    except Exception:  # a reply for the user, the details for the log
        traceback.print_exc()
        return say_only("Sorry, I had a problem on my side. Please say that again.", userid)


def say_only(text: str, userid: str = "-1") -> tuple[dict[str, Any], str, int, str]:
    """A reply outside any session's turn."""
    return {"text": text, "card": None, "step": None}, userid, 0, "listen"


def dialogueIdle(userid: str, debug: bool = False) -> None:
    """Queue a passive follow-up: another film like the one just accepted."""
    res = resources()
    state = res.store.load(userid)
    if not state or state.get("accepted") is None or state.get("last_signal") != "idle":
        return
    film = res.catalog.films[state["accepted"]]
    seen = {film.index, *state["declined"]}
    alike = [
        f.index
        for f in res.catalog.films
        if f.index not in seen and set(f.genres) & set(film.genres)
    ]
    if not alike or res.store.passive_len(userid) > 0:
        return
    other = res.catalog.films[current_model(res).rank(alike, state["declined"])[0]]
    text = (
        f"By the way, if you enjoy {film.title}, {other.title} ({other.year}) is another good pick."
    )
    res.store.push_passive(userid, {"text": text, "card": other.card()})
    if debug:
        print(f"passive for {userid}: {text}", flush=True)


def poll(userid: str) -> list[dict[str, Any]]:
    """The passive messages queued for a session (taken off the queue)."""
    return resources().store.pop_passive(userid)[:20] if userid else []
