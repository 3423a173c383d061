"""Result rows: the one JSON schema shared by the cases, the launcher and the report.

A case prints a single line ``BENCH-JSON {"rows": [...]}`` on stdout (peers may print
their own logs around it). Each row is one method at one size::

    {"bench": "tiny", "key": "pool", "method": "multiprocessing.Pool(2) apply_async",
     "size": 10000, "params": {}, "unit": "tasks/s", "better": "higher",
     "values": [..], "processes": 3, "status": "ok", "notes": ""}

``status`` is ``"ok"`` or a sentence saying why there is no number
(``"unavailable: <reason>"``, ``"skipped in quick mode"``, ``"not yet measured: ..."``).
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

MARKER = "BENCH-JSON "
OK = "ok"


@dataclass
class Row:
    bench: str
    key: str
    method: str
    unit: str
    better: str  # "higher" or "lower"
    size: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    values: list[float] = field(default_factory=list)
    processes: int | None = None
    status: str = OK
    notes: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Row:
        return cls(**data)


def emit(rows: list[Row]) -> None:
    """Print the rows as the case's single JSON record."""
    sys.stdout.flush()
    print(MARKER + json.dumps({"rows": [row.to_dict() for row in rows]}), flush=True)


def parse(stdout: str) -> list[Row] | None:
    """Rows from a case's stdout, or None when it printed no record."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(MARKER):
            payload = json.loads(line[len(MARKER) :])
            return [Row.from_dict(item) for item in payload["rows"]]
    return None
