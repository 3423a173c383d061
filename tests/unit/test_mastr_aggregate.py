"""mastr aggregation by (book, currency) and the JSON Schema file."""

from __future__ import annotations

import json
import math
from pathlib import Path

from examples.mastr import generate
from examples.mastr.aggregate import (
    FIELDS,
    Aggregate,
    aggregate,
    compare,
    format_table,
    gross_aggregates,
    reference_aggregates,
    shard_of,
    value_all,
)
from examples.mastr.schema import INSTRUMENT_FIELDS, validate_portfolio

SCHEMA = Path(__file__).resolve().parents[2] / "examples" / "mastr" / "portfolio.schema.json"


def test_reference_aggregates_count_every_valid_position_once() -> None:
    doc = generate.generate_document(500, seed=4, invalid=5)
    aggregates = reference_aggregates(doc)
    assert sum(a.count for a in aggregates.values()) == 495
    portfolio = validate_portfolio(doc)
    valuations = value_all(portfolio)
    for (book, ccy), agg in aggregates.items():
        mine = [v for v in valuations if (v.book, v.currency) == (book, ccy)]
        assert agg.count == len(mine)
        assert agg.sums["pv"] == math.fsum(v.pv for v in mine)


def test_aggregation_does_not_depend_on_order() -> None:
    valuations = value_all(validate_portfolio(generate.generate_document(300, seed=8)))
    assert aggregate(valuations) == aggregate(list(reversed(valuations)))


def test_compare_finds_a_missing_or_doubled_position() -> None:
    valuations = value_all(validate_portfolio(generate.generate_document(300, seed=8)))
    reference = aggregate(valuations)
    gross = gross_aggregates(valuations)
    assert compare(reference, reference, gross) == []
    assert compare(aggregate(valuations[1:]), reference, gross) != []
    assert compare(aggregate([*valuations, valuations[0]]), reference, gross) != []


def test_shards_are_stable_and_cover_every_shard() -> None:
    keys = [(b, c) for b in generate.BOOKS for c in generate.CURRENCIES]
    assert {shard_of(k, 3) for k in keys} == {0, 1, 2}
    assert [shard_of(k, 3) for k in keys] == [shard_of(k, 3) for k in keys]


def test_format_table_lists_every_key_and_the_total() -> None:
    aggs = {("B", "EUR"): Aggregate(2, dict.fromkeys(FIELDS, 1.5))}
    table = format_table(aggs, "EUR")
    assert "B" in table and "TOTAL" in table and "1.50" in table


def test_the_json_schema_file_names_every_instrument_field() -> None:
    schema = json.loads(SCHEMA.read_text())
    defs = schema["$defs"]
    for kind, fields in INSTRUMENT_FIELDS.items():
        assert set(defs[kind]["properties"]) == set(fields)
        assert defs[kind]["additionalProperties"] is False
