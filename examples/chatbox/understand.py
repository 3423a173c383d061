"""Rule-based understanding of one message: keywords, stemming, fuzzy names.

:func:`understand` finds, in free text, the slots the dialog asks for (genre,
actor, director, MPAA rating), an answer (yes / no / no preference), a
greeting, a goodbye or a wish to start over. Several slots can come at once:
"something funny with Bill Murray" gives a genre and an actor. Nothing here
calls out of the process.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

from examples.chatbox.catalog import Catalog, normalize

__all__ = ["Parse", "stem", "understand"]

#: stems of words that name or suggest a genre
GENRE_WORDS: dict[str, tuple[str, ...]] = {
    "comedy": ("comedi", "comedy", "funny", "funni", "laugh", "hilari", "humor", "humour", "comic"),
    "action": ("action", "explos", "shootout", "fight"),
    "adventure": ("adventur", "quest", "treasur"),
    "animation": ("anim", "cartoon", "pixar", "anime"),
    "biography": ("biograph", "biopic"),
    "crime": ("crime", "crimin", "gangster", "mafia", "heist", "mob"),
    "drama": ("drama", "dramat", "serious"),
    "family": ("famili", "family", "kid", "children", "child"),
    "fantasy": ("fantasi", "fantasy", "magic", "wizard", "fairi"),
    "horror": ("horror", "scari", "scary", "fright", "spooki", "spooky", "creepi", "creepy"),
    "music": ("music",),
    "musical": ("musical", "sing", "song"),
    "mystery": ("mysteri", "mystery", "whodunit", "detect"),
    "romance": ("romanc", "romant", "love"),
    "sci-fi": ("sci-fi", "scifi", "space", "futur", "robot", "alien"),
    "sport": ("sport", "boxing", "footbal", "basebal"),
    "thriller": ("thriller", "suspens", "tense"),
    "war": ("war", "soldier", "battl"),
    "western": ("western", "cowboy"),
    "history": ("histor",),
}
PHRASES = {"science fiction": "sci-fi", "true story": "biography", "sci fi": "sci-fi"}

NO_PREFERENCE = (
    "no preference", "dont care", "do not care", "doesnt matter", "does not matter",
    "dont mind", "no matter", "anything", "whatever", "any", "either", "surprise me",
    "up to you", "not important", "no one", "nobody", "none", "skip",
)  # fmt: skip
YES = ("yes", "yeah", "yep", "yup", "sure", "ok", "okay", "great", "perfect", "sounds good",
       "i like", "love it", "lets do", "id like", "good", "y", "fine", "alright")  # fmt: skip
NO = ("no", "nope", "nah", "not really", "another", "something else", "next", "n",
      "seen it", "already seen", "dont like", "not that", "other")  # fmt: skip
BYE = ("bye", "goodbye", "good bye", "quit", "exit", "see you", "see ya", "thats all")
HELLO = ("hi", "hello", "hey", "good morning", "good evening", "howdy", "greetings")
RESTART = ("start over", "restart", "new movie", "another movie", "again", "reset")
RATING_PATTERNS = (
    (r"\bnc ?-? ?17\b", "NC-17"),
    (r"\bpg ?-? ?13\b", "PG-13"),
    (r"\bpg\b", "PG"),
    (r"\b(?:rated|rating) r\b|\br rated\b|\b^r$", "R"),
    (r"\b(?:rated|rating) g\b|\bg rated\b|^g$", "G"),
)
ACTOR_CUES = ("with", "starring", "stars", "featuring", "actor", "actress", "played by")
DIRECTOR_CUES = ("directed by", "director", "by", "from")
#: words no name in the catalog is spelled close to (no fuzzy match tried on them)
STOPWORDS = frozenset(
    {"a", "an", "the", "with", "by", "and", "or", "no", "not", "any", "something", "some",
     "movie", "film", "please", "like", "want", "would", "preference", "funny", "rated"}
)  # fmt: skip
SUFFIXES = ("ies", "ing", "ed", "es", "ly", "s", "y")


def stem(word: str) -> str:
    """A light suffix stripper: "comedies" -> "comedi", "scary" -> "scari"."""
    if len(word) <= 4:
        return word
    for suffix in SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            base = word[: -len(suffix)]
            return base + "i" if suffix in ("ies", "y") else base
    return word


@dataclass
class Parse:
    """What one message says."""

    genres: list[str] = field(default_factory=list)
    not_genres: list[str] = field(default_factory=list)
    actors: list[str] = field(default_factory=list)
    directors: list[str] = field(default_factory=list)
    rating: str | None = None
    answer: str | None = None  # "yes" | "no" | "any"
    hello: bool = False
    bye: bool = False
    restart: bool = False
    #: a capitalised or multi-word name we could not find in the catalog
    unknown_name: str | None = None

    def slots(self) -> bool:
        return bool(self.genres or self.actors or self.directors or self.rating)


def _has(text: str, phrases: tuple[str, ...]) -> bool:
    return any(re.search(rf"(?:^| ){re.escape(p)}(?: |$)", text) for p in phrases)


def _genres(words: list[str], text: str) -> tuple[list[str], list[str]]:
    found: list[str] = []
    negated: list[str] = []
    for phrase, genre in PHRASES.items():
        if phrase in text:
            found.append(genre)
    for i, word in enumerate(words):
        stemmed = stem(word)
        for genre, stems in GENRE_WORDS.items():
            if any(stemmed == s or (len(s) > 4 and stemmed.startswith(s)) for s in stems):
                before = words[max(0, i - 2) : i]
                bucket = (
                    negated if {"no", "not", "without", "dont", "hate"} & set(before) else found
                )
                if genre not in bucket:
                    bucket.append(genre)
    if "love" in words and len(found) > 1 and "romance" in found:
        found.remove("romance")  # "I'd love a comedy": love is a verb there
    return [g for g in found if g not in negated], negated


def _people(catalog: Catalog, words: list[str]) -> list[tuple[int, str]]:
    """(position, name) of people in the catalog: full names, unique last names, or
    a close spelling of a full name."""
    found: list[tuple[int, str]] = []
    taken: set[int] = set()
    for size in (3, 2):
        for i in range(len(words) - size + 1):
            if taken & set(range(i, i + size)):
                continue
            gram = " ".join(words[i : i + size])
            name = catalog.people.get(gram)
            if name is None and len(gram) >= 7 and not STOPWORDS & set(words[i : i + size]):
                near = [
                    key
                    for key in catalog.people_by_initial.get(gram[0], ())
                    if abs(len(key) - len(gram)) <= 2
                ]
                close = difflib.get_close_matches(gram, near, n=1, cutoff=0.85)
                name = catalog.people[close[0]] if close else None
            if name is not None:
                found.append((i, name))
                taken.update(range(i, i + size))
    for i, word in enumerate(words):
        if i in taken or len(word) < 4 or word in COMMON:
            continue
        names = catalog.last_names.get(word)
        if names:
            found.append((i, names[0]))
    return sorted(found)


#: words that are last names in the catalog but mostly mean something else
COMMON = frozenset(
    {"king", "young", "stone", "wood", "hill", "bell", "lee", "james", "black", "page", "ford",
     "banks", "short", "fox", "love", "rock", "grant", "martin", "hunter", "cage", "white",
     "jones", "davis", "scott", "park", "reed", "allen", "brooks", "moore", "crystal", "walken",
     "glover", "lord", "good", "stewart", "rush", "russell", "wright", "miller"}
)  # fmt: skip


def understand(text: str, catalog: Catalog, expecting: str | None = None) -> Parse:
    """The slots and answers in ``text``; ``expecting`` is the slot just asked for
    ("genre", "actor", "director", "rating", "recommend")."""
    norm = normalize(text)
    words = norm.split()
    parse = Parse()
    if not words:
        return parse
    parse.genres, parse.not_genres = _genres(words, norm)
    for pattern, rating in RATING_PATTERNS:
        if re.search(pattern, norm):
            parse.rating = rating
            break
    if parse.rating is None and expecting == "rating" and norm in ("r", "g"):
        parse.rating = norm.upper()
    for i, name in _people(catalog, words):
        before = " ".join(words[max(0, i - 2) : i])
        as_director = any(cue in before.split() or before.endswith(cue) for cue in DIRECTOR_CUES)
        as_actor = any(cue in before.split() or before.endswith(cue) for cue in ACTOR_CUES)
        acts, directs = catalog.acts(name), catalog.directs(name)
        if directs and (as_director or not acts or (expecting == "director" and not as_actor)):
            parse.directors.append(name)
        elif acts:
            parse.actors.append(name)
    parse.bye = _has(norm, BYE)
    parse.hello = _has(norm, HELLO) and len(words) <= 4
    parse.restart = _has(norm, RESTART) and not parse.slots()
    if _has(norm, NO_PREFERENCE):
        parse.answer = "any"
    elif _has(norm, NO):
        parse.answer = "no"
    elif _has(norm, YES):
        parse.answer = "yes"
    if expecting in ("actor", "director") and not parse.slots() and parse.answer is None:
        guess = " ".join(w for w in text.split() if w[:1].isupper())
        if len(guess.split()) >= 2 or (guess and len(words) <= 3):
            parse.unknown_name = guess
    return parse
