"""Ranking by a matrix-factorisation model, and the ALS steps that train it.

The ratings matrix (``data/ratings.npz``, made by :mod:`.generate`) holds
``user``, ``film`` and ``stars`` arrays. The model is ``stars ~ mean + U[u] . V[f]``,
trained by alternating least squares: each half-step solves one small ridge
regression per row, and :func:`solve_rows` does that for a block of rows, so a
cluster can run the blocks as map steps (:mod:`.train`). The model travels as
``npz`` bytes (:meth:`Model.to_bytes`), which is how it is kept in Redis.

A new user has no ratings; the films they decline in the dialog are folded
in as low ratings (a ridge regression for their own vector), so each next
candidate moves away from what they turned down.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from examples.chatbox.catalog import DATA

__all__ = ["Model", "Ratings", "baseline_model", "load_ratings", "rmse", "solve_rows"]

Matrix = NDArray[np.float64]
DECLINED_STARS = 1.5


@dataclass(frozen=True)
class Ratings:
    """Observed ratings as parallel arrays."""

    user: NDArray[np.int32]
    film: NDArray[np.int32]
    stars: NDArray[np.float64]
    n_users: int
    n_films: int

    @property
    def mean(self) -> float:
        return float(self.stars.mean())

    @functools.cached_property
    def by_user(self) -> list[tuple[NDArray[np.int32], Matrix]]:
        return _group(self.user, self.film, self.stars, self.n_users)

    @functools.cached_property
    def by_film(self) -> list[tuple[NDArray[np.int32], Matrix]]:
        return _group(self.film, self.user, self.stars, self.n_films)


def _group(
    key: NDArray[np.int32], other: NDArray[np.int32], stars: Matrix, n: int
) -> list[tuple[NDArray[np.int32], Matrix]]:
    order = np.argsort(key, kind="stable")
    bounds = np.searchsorted(key[order], np.arange(n + 1))
    return [
        (other[order[bounds[i] : bounds[i + 1]]], stars[order[bounds[i] : bounds[i + 1]]])
        for i in range(n)
    ]


@functools.cache
def load_ratings() -> Ratings:
    """The ratings shipped with the example (read once per process)."""
    with np.load(DATA / "ratings.npz") as data:
        user = data["user"].astype(np.int32)
        film = data["film"].astype(np.int32)
        stars = data["stars"].astype(np.float64)
        n_users, n_films = (int(x) for x in data["shape"])
    return Ratings(user, film, stars, n_users, n_films)


def solve_rows(
    rows: range, groups: list[tuple[NDArray[np.int32], Matrix]], fixed: Matrix, mean: float,
    lam: float,
) -> Matrix:  # fmt: skip
    """One ALS half-step for ``rows``: each row's ridge solution against ``fixed``."""
    rank = fixed.shape[1]
    out = np.zeros((len(rows), rank))
    eye = lam * np.eye(rank)
    for k, row in enumerate(rows):
        others, stars = groups[row]
        if len(others) == 0:
            continue
        f = fixed[others]
        out[k] = np.linalg.solve(f.T @ f + eye * len(others), f.T @ (stars - mean))
    return out


def rmse(ratings: Ratings, users: Matrix, films: Matrix, mean: float) -> float:
    pred = mean + np.einsum("ij,ij->i", users[ratings.user], films[ratings.film])
    return float(np.sqrt(np.mean((pred - ratings.stars) ** 2)))


@dataclass(frozen=True)
class Model:
    """A trained model: ``mean``, user factors ``users`` and film factors ``films``."""

    mean: float
    users: Matrix
    films: Matrix
    version: str = "baseline"

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer, mean=np.array([self.mean]), users=self.users, films=self.films,
            version=np.array([self.version]),
        )  # fmt: skip
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Model:
        with np.load(io.BytesIO(data)) as npz:
            return cls(float(npz["mean"][0]), npz["users"], npz["films"], str(npz["version"][0]))

    def taste(self, declined: list[int], lam: float = 1.0) -> Matrix:
        """A new user's vector: the average user, moved away from the declined films."""
        prior = self.users.mean(axis=0)
        if not declined:
            return prior
        f = self.films[declined]
        residual = DECLINED_STARS - (self.mean + f @ prior)
        rank = f.shape[1]
        return prior + np.linalg.solve(f.T @ f + lam * np.eye(rank), f.T @ residual)

    def rank(self, candidates: list[int], declined: list[int]) -> list[int]:
        """``candidates`` best first for a user who turned down ``declined``."""
        if not candidates:
            return []
        scores = self.mean + self.films[candidates] @ self.taste(declined)
        order = np.argsort(-scores, kind="stable")
        return [candidates[int(i)] for i in order]


def baseline_model(ratings: Ratings, rank: int = 8) -> Model:
    """Before any training: each film's mean rating as its only factor."""
    sums = np.bincount(ratings.film, ratings.stars, minlength=ratings.n_films)
    counts = np.bincount(ratings.film, minlength=ratings.n_films)
    film_mean = (sums + 3.0 * 5) / (counts + 5)  # shrunk towards 3 stars
    films = np.zeros((ratings.n_films, rank))
    films[:, 0] = film_mean - ratings.mean
    users = np.zeros((ratings.n_users, rank))
    users[:, 0] = 1.0
    return Model(ratings.mean, users, films, "baseline")
