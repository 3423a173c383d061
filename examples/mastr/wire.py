"""What travels between mastr's stages: msgpack payloads, built and read here only.

- valuation job: ``{"cluster": c, "market": <cache key>, "positions": [position, ...]}``
- valuation reply: ``{"results": [row, ...], "failed": [[id, message], ...]}``
  where a row is :meth:`Valuation.as_tuple`
- aggregation job: ``{"cluster": c, "run": id, "shard": i, "shards": n, "results": [row, ...]}``
- aggregation reply: ``{"received": n, "applied": k}``

``cluster`` names the deployment's keys in Redis (``palm:<cluster>:``), so one
set of workers can serve runs of several deployments sharing a Redis.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgpack

from examples.mastr.pricing import Valuation

__all__ = [
    "aggregation_job",
    "aggregation_reply",
    "read",
    "valuation_job",
    "valuation_reply",
    "valuations",
]


def read(payload: bytes) -> dict[str, Any]:
    data = msgpack.unpackb(payload, raw=False)
    if not isinstance(data, dict):
        raise ValueError("mastr payloads are msgpack maps")
    return data


def valuation_job(cluster: str, market_key: str, positions: Sequence[dict[str, Any]]) -> bytes:
    return bytes(
        msgpack.packb({"cluster": cluster, "market": market_key, "positions": list(positions)})
    )


def valuation_reply(results: Sequence[Valuation], failed: Sequence[tuple[str, str]]) -> bytes:
    return bytes(
        msgpack.packb(
            {"results": [v.as_tuple() for v in results], "failed": [list(f) for f in failed]}
        )
    )


def valuations(rows: Sequence[Sequence[Any]]) -> list[Valuation]:
    return [Valuation.from_tuple(row) for row in rows]


def aggregation_job(
    cluster: str, run: str, shard: int, shards: int, rows: Sequence[Sequence[Any]]
) -> bytes:
    return bytes(
        msgpack.packb(
            {
                "cluster": cluster,
                "run": run,
                "shard": shard,
                "shards": shards,
                "results": list(rows),
            }
        )
    )


def aggregation_reply(received: int, applied: int) -> bytes:
    return bytes(msgpack.packb({"received": received, "applied": applied}))
