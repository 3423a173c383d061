"""Make ``data/ratings.npz``: synthetic ratings from a documented latent model.

No real person's ratings are shipped. With ``numpy.random.default_rng(SEED)``:

* every genre gets a random direction ``g`` in ``R^RANK`` (standard normal);
* a film's latent vector is the mean of its genres' directions plus noise
  (sd 0.5); its quality is normal (sd 0.4) plus 0.3 per decade of age beyond
  two (old films that are still listed are the ones people liked);
* a user's taste is standard normal in ``R^RANK`` scaled by 0.6;
* each user rates ``20 + Poisson(15)`` films picked with probability
  proportional to the film's popularity (log-normal);
* stars = ``clip(round(3.3 + quality + taste . film + N(0, 0.6)), 1, 5)``.

Run ``python -m examples.chatbox.generate`` to rebuild the file; the same
seed gives the same bytes of data.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from examples.chatbox.catalog import DATA, load_catalog

__all__ = ["RANK", "SEED", "USERS", "generate"]

SEED = 20
RANK = 6
USERS = 3000


def generate(users: int = USERS, seed: int = SEED) -> dict[str, np.ndarray]:
    catalog = load_catalog()
    rng = np.random.default_rng(seed)
    genres = {g: rng.standard_normal(RANK) for g in catalog.genres}
    n_films = len(catalog)
    film_vec = np.stack(
        [np.mean([genres[g] for g in f.genres], axis=0) for f in catalog.films]
    ) + 0.5 * rng.standard_normal((n_films, RANK))
    age = np.array([max(0, (2025 - f.year) / 10 - 2) for f in catalog.films])
    quality = 0.4 * rng.standard_normal(n_films) + 0.3 * age
    popularity = rng.lognormal(0.0, 1.0, n_films)
    popularity /= popularity.sum()
    rows_u, rows_f, rows_s = [], [], []
    for u in range(users):
        taste = 0.6 * rng.standard_normal(RANK)
        count = min(n_films, 20 + int(rng.poisson(15)))
        films = rng.choice(n_films, size=count, replace=False, p=popularity)
        stars = 3.3 + quality[films] + film_vec[films] @ taste + 0.6 * rng.standard_normal(count)
        rows_u.append(np.full(count, u))
        rows_f.append(films)
        rows_s.append(np.clip(np.rint(stars), 1, 5))
    return {
        "user": np.concatenate(rows_u).astype(np.int16),
        "film": np.concatenate(rows_f).astype(np.int16),
        "stars": np.concatenate(rows_s).astype(np.int8),
        "shape": np.array([users, n_films]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DATA / "ratings.npz")
    args = parser.parse_args()
    arrays = generate()
    np.savez_compressed(args.out, **arrays)
    print(f"{len(arrays['stars'])} ratings by {USERS} users -> {args.out}")


if __name__ == "__main__":
    main()
