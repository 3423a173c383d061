"""Train the recommender on the palm cluster: ALS half-steps as map steps.

:func:`als_step` is the function the workers run (the ``als`` function of the
``chatbox`` service in palm.yaml). :func:`train` drives it through the HTTP
edge's map route, ``POST /map/chatbox/als``: each round maps the user blocks,
then the film blocks; each step reads the other side's factors from Redis and
writes its block back, so no factor matrix travels through the edge. The last
map step (``publish``) puts the model at ``chatbox:model`` where every
worker's dialog reads it (:func:`examples.chatbox.dialog.current_model`).

``python -m examples.chatbox train --url http://127.0.0.1:8080 [--api-key K]``
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from examples.chatbox.dialog import MODEL_KEY
from examples.chatbox.recommend import Matrix, Model, load_ratings, rmse, solve_rows

__all__ = ["als_step", "main", "train"]

RANK = 8
LAMBDA = 0.1
TTL_S = 900


def _redis() -> Any:
    import redis

    url = os.environ.get("CHATBOX_REDIS_URL") or os.environ.get("PALM_REDIS_URL")
    if not url:
        raise RuntimeError("als_step needs Redis: set PALM_REDIS_URL or CHATBOX_REDIS_URL")
    return redis.Redis.from_url(url)


def _npy(array: Matrix) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _factors(r: Any, run: str, side: str, rnd: int, rows: int) -> Matrix:
    if side == "films" and rnd < 0:  # the seeded start, the same on every worker
        return np.random.default_rng(20).normal(0.0, 0.1, (rows, RANK))
    blocks = r.hgetall(f"chatbox:als:{run}:{side}:{rnd}")
    parts = sorted((int(k), np.load(io.BytesIO(v), allow_pickle=False)) for k, v in blocks.items())
    matrix = np.concatenate([part for _, part in parts]) if parts else np.zeros((0, RANK))
    if matrix.shape != (rows, RANK):
        raise RuntimeError(f"{side} factors of round {rnd} are incomplete: {matrix.shape}")
    return matrix


def als_step(item: dict[str, Any]) -> dict[str, Any]:
    """One block of one ALS half-step, or ``publish`` of the finished model."""
    if not isinstance(item, dict) or item.get("side") not in ("users", "films", "publish"):
        raise ValueError("an ALS step is {side: users|films|publish, run, round, start, stop}")
    side, run, rnd = item["side"], str(item["run"])[:40], int(item["round"])
    ratings, r = load_ratings(), _redis()
    if side == "publish":
        users = _factors(r, run, "users", rnd, ratings.n_users)
        films = _factors(r, run, "films", rnd, ratings.n_films)
        model = Model(ratings.mean, users, films, run)
        with r.pipeline() as pipe:
            pipe.set(MODEL_KEY, model.to_bytes())
            pipe.set(MODEL_KEY + ":version", run)
            pipe.execute()
        r.delete(*r.keys(f"chatbox:als:{run}:*"))
        return {"published": run, "rmse": rmse(ratings, users, films, ratings.mean)}
    start, stop = int(item["start"]), int(item["stop"])
    if side == "users":
        fixed = _factors(r, run, "films", rnd - 1, ratings.n_films)
        groups = ratings.by_user
    else:
        fixed = _factors(r, run, "users", rnd, ratings.n_users)
        groups = ratings.by_film
    block = solve_rows(range(start, stop), groups, fixed, ratings.mean, LAMBDA)
    key = f"chatbox:als:{run}:{side}:{rnd}"
    with r.pipeline() as pipe:
        pipe.hset(key, str(start), _npy(block))
        pipe.expire(key, TTL_S)
        pipe.execute()
    return {"side": side, "round": rnd, "start": start, "stop": stop, "pid": os.getpid()}


def _post(url: str, path: str, body: bytes, api_key: str | None) -> Any:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=300)
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    if response.status != 200:
        raise RuntimeError(f"POST {path}: {response.status} {data[:300]!r}")
    return json.loads(data)


def train(
    url: str, api_key: str | None = None, *, path: str = "/map/chatbox/als", rounds: int = 6,
    block: int = 250,
) -> dict[str, Any]:  # fmt: skip
    """Run ALS on the cluster behind ``url``; return what ``publish`` said."""
    ratings = load_ratings()
    run = f"{int(time.time())}-{uuid.uuid4().hex[:8]}"
    pids: set[int] = set()
    started = time.monotonic()
    for rnd in range(rounds):
        for side, n in (("users", ratings.n_users), ("films", ratings.n_films)):
            items = [
                {"side": side, "run": run, "round": rnd, "start": s, "stop": min(n, s + block)}
                for s in range(0, n, block)
            ]
            done = _post(url, path, json.dumps(items).encode(), api_key)
            pids.update(step["pid"] for step in done)
    result: dict[str, Any] = _post(
        url, path, json.dumps([{"side": "publish", "run": run, "round": rounds - 1}]).encode(),
        api_key,
    )[0]  # fmt: skip
    result.update(workers=sorted(pids), seconds=round(time.monotonic() - started, 2))
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="train the chatbox recommender on palm")
    parser.add_argument("--url", required=True, help="the edge, e.g. http://127.0.0.1:8080")
    parser.add_argument("--api-key", default=os.environ.get("PALM_API_KEY"))
    parser.add_argument("--path", default="/map/chatbox/als")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args(argv)
    result = train(args.url, args.api_key, path=args.path, rounds=args.rounds)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
