"""Aggregates kept in Redis, applied exactly once per position id.

Everything a run keeps lives under ``<prefix>mastr:<run>:``:

- ``agg:<book>|<ccy>``: a hash with ``count`` and the sums of every field;
- ``seen:<book>|<ccy>``: the set of position ids already added to that hash;
- ``keys``: the set of aggregate keys the run has touched;
- ``meta``: a hash with ``expected`` (valid positions), ``done`` and the
  invalid positions as JSON.

Results are applied by a Lua script that adds each id to ``seen`` and sums
only the values of the ids that were not there yet, then increments the hash
by those sums (the values travel as msgpack float64 and the sums are formatted
with 17 significant digits, so no bit is lost on the way): the check and the
update are one atomic step inside Redis. So an aggregation worker keeps no
state of its own; a worker killed halfway through a batch loses nothing, and
the batch delivered again to its replacement adds only what was not added yet.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import redis

from examples.mastr.aggregate import FIELDS, Aggregate, Key, key_name, parse_key
from examples.mastr.pricing import Valuation

__all__ = ["Snapshot", "Store"]

# KEYS: keys-set, then per aggregate key its seen-set and its hash.
# ARGV[1]: msgpack [[name, [[id, pv, pv_reporting, delta, vega, dv01], ...]], ...]
# with the values as float64, so they reach Lua bit for bit. One argument
# instead of six per position keeps the call cheap to send and to parse.
# Returns how many positions were new.
_APPLY = """
local fields = {'pv', 'pv_reporting', 'delta', 'vega', 'dv01'}
local groups = cmsgpack.unpack(ARGV[1])
local total = 0
for g = 1, #groups do
  local name, rows = groups[g][1], groups[g][2]
  local seen, hash = KEYS[2 * g], KEYS[2 * g + 1]
  local sums = {0.0, 0.0, 0.0, 0.0, 0.0}
  local added = 0
  for i = 1, #rows do
    local row = rows[i]
    if redis.call('SADD', seen, row[1]) == 1 then
      added = added + 1
      for f = 1, 5 do
        sums[f] = sums[f] + row[f + 1]
      end
    end
  end
  if added > 0 then
    for f = 1, 5 do
      redis.call('HINCRBYFLOAT', hash, fields[f], string.format('%.17g', sums[f]))
    end
    redis.call('HINCRBY', hash, 'count', added)
    redis.call('SADD', KEYS[1], name)
  end
  total = total + added
end
return total
"""


@dataclass(frozen=True)
class Snapshot:
    """Aggregates read in one Redis transaction, with the run's progress."""

    aggregates: dict[Key, Aggregate]
    expected: int
    done: bool
    ids: dict[Key, frozenset[str]] | None = None

    @property
    def count(self) -> int:
        return sum(a.count for a in self.aggregates.values())


class Store:
    """The aggregation state of one run in Redis (``client`` is a redis-py client)."""

    def __init__(self, client: redis.Redis, run: str, prefix: str = "palm:default:") -> None:
        self.client = client
        self.run = run
        self.base = f"{prefix}mastr:{run}:"
        self._apply = client.register_script(_APPLY)

    def _key(self, *parts: str) -> str:
        return self.base + ":".join(parts)

    def begin(self, expected: int, invalid: Sequence[Mapping[str, Any]] = ()) -> None:
        """Start a run: forget any earlier state of the same run id."""
        stale = list(self.client.scan_iter(match=self.base + "*", count=1000))
        pipe = self.client.pipeline(transaction=True)
        if stale:
            pipe.delete(*stale)
        pipe.hset(
            self._key("meta"),
            mapping={"expected": expected, "done": 0, "invalid": json.dumps(list(invalid))},
        )
        pipe.execute()

    def finish(self) -> None:
        """Mark the run complete: every valid position has been applied."""
        self.client.hset(self._key("meta"), "done", 1)

    def apply(self, valuations: Iterable[Valuation]) -> int:
        """Add valuations not added before; returns how many were new."""
        groups: dict[Key, list[list[Any]]] = {}
        for v in valuations:
            groups.setdefault((v.book, v.currency), []).append(
                [v.position_id, v.pv, v.pv_reporting, v.delta, v.vega, v.dv01]
            )
        if not groups:
            return 0
        keys = [self._key("keys")]
        packed: list[Any] = []
        for key, rows in groups.items():
            name = key_name(key)
            keys += [self._key("seen", name), self._key("agg", name)]
            packed.append([name, rows])
        return int(self._apply(keys=keys, args=[msgpack.packb(packed, use_single_float=False)]))

    def record_failed(self, failed: Sequence[Mapping[str, Any]]) -> None:
        """Move positions that could not be valued from ``expected`` to the invalid list."""
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self._key("meta"), "invalid", json.dumps([*self.invalid(), *failed]))
        pipe.hincrby(self._key("meta"), "expected", -len(failed))
        pipe.execute()

    def invalid(self) -> list[dict[str, Any]]:
        raw = self.client.hget(self._key("meta"), "invalid")
        return list(json.loads(raw)) if raw else []

    def snapshot(self, with_ids: bool = False) -> Snapshot:
        """Every aggregate of the run as of one instant (a MULTI/EXEC read)."""
        names = sorted(n.decode() for n in self.client.smembers(self._key("keys")))  # type: ignore[union-attr]
        pipe = self.client.pipeline(transaction=True)
        pipe.hmget(self._key("meta"), ["expected", "done"])
        for name in names:
            pipe.hgetall(self._key("agg", name))
            if with_ids:
                pipe.smembers(self._key("seen", name))
        replies = pipe.execute()
        expected, done = replies[0]
        step = 2 if with_ids else 1
        aggregates: dict[Key, Aggregate] = {}
        ids: dict[Key, frozenset[str]] = {}
        for i, name in enumerate(names):
            raw = replies[1 + i * step]
            key = parse_key(name)
            aggregates[key] = Aggregate(
                int(raw.get(b"count", 0)), {f: float(raw.get(f.encode(), 0.0)) for f in FIELDS}
            )
            if with_ids:
                ids[key] = frozenset(m.decode() for m in replies[2 + i * step])
        return Snapshot(
            aggregates=aggregates,
            expected=int(expected or 0),
            done=bool(int(done or 0)),
            ids=ids if with_ids else None,
        )
