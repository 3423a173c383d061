"""The film catalog shipped with the example (``data/films.csv``) and its vocabulary."""

from __future__ import annotations

import csv
import functools
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DATA", "RATINGS", "Catalog", "Film", "load_catalog", "normalize"]

DATA = Path(__file__).resolve().parent / "data"
RATINGS = ("G", "PG", "PG-13", "R", "NC-17")


@dataclass(frozen=True)
class Film:
    """One film: facts from the catalog, ``index`` its row in the ratings matrix."""

    index: int
    title: str
    year: int
    genres: tuple[str, ...]
    director: str
    cast: tuple[str, ...]
    rating: str
    plot: str

    def card(self) -> dict[str, Any]:
        """What the web page shows for a recommendation."""
        return {
            "title": self.title,
            "year": self.year,
            "genres": list(self.genres),
            "director": self.director,
            "cast": list(self.cast),
            "rating": self.rating,
            "plot": self.plot,
        }


def normalize(text: str) -> str:
    """Lower case, accents removed, punctuation but ``-`` turned into spaces."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    text = text.replace("'", "").replace("\u2019", "")
    kept = [ch if ch.isalnum() or ch == "-" else " " for ch in text]
    return " ".join("".join(kept).split())


class Catalog:
    """The films and the names the dialog understands: genres, people, ratings."""

    def __init__(self, films: list[Film]) -> None:
        self.films = films
        self.genres = sorted({g for film in films for g in film.genres})
        self.actors = sorted({name for film in films for name in film.cast})
        self.directors = sorted({film.director for film in films})
        #: normalized full name -> the name as written
        self.people = {normalize(name): name for name in {*self.actors, *self.directors}}
        #: first letter -> the normalized full names that start with it (fuzzy matching)
        self.people_by_initial: dict[str, list[str]] = {}
        for key in self.people:
            self.people_by_initial.setdefault(key[0], []).append(key)
        by_last: dict[str, list[str]] = {}
        for key, name in self.people.items():
            by_last.setdefault(key.split()[-1], []).append(name)
        #: normalized last name -> the names that end with it (most films first)
        self.last_names = {
            last: sorted(names, key=lambda n: -self.film_count(n))
            for last, names in by_last.items()
        }

    @functools.cache  # noqa: B019 - one catalog per process
    def film_count(self, name: str) -> int:
        return sum(1 for f in self.films if name in f.cast or name == f.director)

    def acts(self, name: str) -> bool:
        return any(name in f.cast for f in self.films)

    def directs(self, name: str) -> bool:
        return any(name == f.director for f in self.films)

    def __len__(self) -> int:
        return len(self.films)


def read_films(path: Path) -> list[Film]:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    films = []
    for index, row in enumerate(rows):
        if row["rating"] not in RATINGS:
            raise ValueError(f"{path}: {row['title']}: unknown rating {row['rating']!r}")
        films.append(
            Film(
                index=index,
                title=row["title"],
                year=int(row["year"]),
                genres=tuple(row["genres"].split(";")),
                director=row["director"],
                cast=tuple(row["cast"].split(";")),
                rating=row["rating"],
                plot=row["plot"],
            )
        )
    return films


@functools.cache
def load_catalog(path: Path | None = None) -> Catalog:
    """The catalog (read once per process)."""
    return Catalog(read_films(path or DATA / "films.csv"))
