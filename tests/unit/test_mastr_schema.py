"""mastr portfolio validation: precise errors, nothing silently dropped."""

from __future__ import annotations

import copy
import io
import json
from typing import Any

import pytest

from examples.mastr import generate
from examples.mastr.schema import (
    PortfolioError,
    parse_portfolio,
    validate_portfolio,
)


@pytest.fixture
def doc() -> dict[str, Any]:
    return generate.generate_document(60, seed=3)


def _first_of(doc: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(p for p in doc["positions"] if p["instrument"]["type"] == kind)


def test_a_generated_portfolio_is_valid(doc: dict[str, Any]) -> None:
    portfolio = validate_portfolio(doc)
    assert portfolio.errors == []
    assert len(portfolio.positions) == 60


@pytest.mark.parametrize(
    ("kind", "field", "value", "expected"),
    [
        ("european_option", "strike", -1.0, "must be > 0"),
        ("european_option", "option_type", "straddle", "must be one of call, put"),
        ("european_option", "underlying", "NOPE", "must be one of"),
        ("fixed_rate_bond", "frequency", 3, "must be one of 1, 2, 4, 12"),
        ("fixed_rate_bond", "maturity_y", "soon", "must be a number"),
        ("fx_forward", "notional_foreign", float("nan"), "must be finite"),
        ("fx_forward", "strike", True, "must be a number"),
    ],
)
def test_an_invalid_instrument_field_is_named_with_its_position(
    doc: dict[str, Any], kind: str, field: str, value: Any, expected: str
) -> None:
    bad = _first_of(doc, kind)
    bad["instrument"][field] = value
    portfolio = validate_portfolio(doc)
    assert len(portfolio.positions) == 59
    [error] = portfolio.errors
    assert error.position_id == bad["id"]
    assert error.field == f"instrument.{field}"
    assert expected in error.message
    assert repr(bad["id"]) in str(error) and f"instrument.{field}" in str(error)


def test_missing_fields_unknown_fields_and_wrong_currency_are_reported(
    doc: dict[str, Any],
) -> None:
    positions = doc["positions"]
    del positions[0]["instrument"]["maturity_y"]
    positions[1]["instrument"]["strke"] = 1.0
    option = next(p for p in positions[6:] if p["instrument"]["type"] == "european_option")
    option["currency"] = "JPY" if option["currency"] != "JPY" else "EUR"
    positions[3]["book"] = ""
    positions[4] = "not an object"
    del positions[5]["id"]
    errors = {(e.index, e.field) for e in validate_portfolio(doc).errors}
    assert (0, "instrument.maturity_y") in errors
    assert (1, "instrument.strke") in errors
    assert (positions.index(option), "currency") in errors
    assert (3, "book") in errors
    assert (4, "(position)") in errors
    assert (5, "id") in errors


def test_a_duplicate_id_is_an_error_on_the_second_occurrence(doc: dict[str, Any]) -> None:
    doc["positions"][7]["id"] = doc["positions"][2]["id"]
    portfolio = validate_portfolio(doc)
    [error] = portfolio.errors
    assert (error.index, error.field) == (7, "id")
    assert "index 2" in error.message


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("format",), "other/1", "field 'format'"),
        (("market", "fx", "EUR"), 2.0, "market.fx.EUR"),
        (("market", "curves", "USD", "compounding"), "daily", "market.curves.USD.compounding"),
        (("market", "curves", "USD", "tenors_y", 2), 0.1, "market.curves.USD.tenors_y.2"),
        (("market", "volatilities", "USSTK0"), -0.2, "market.volatilities.USSTK0"),
    ],
)
def test_bad_market_data_rejects_the_whole_document(
    doc: dict[str, Any], path: tuple[Any, ...], value: Any, expected: str
) -> None:
    target: Any = doc
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    with pytest.raises(PortfolioError, match=expected.replace(".", r"\.")):
        validate_portfolio(doc)


def _written(count: int, seed: int, invalid: int = 0) -> str:
    out = io.StringIO()
    generate.write(out, count, seed, invalid)
    return out.getvalue()


def test_a_broken_json_line_costs_only_that_position() -> None:
    text = _written(20, seed=5)
    lines = text.splitlines()
    victim = next(i for i, line in enumerate(lines) if '"P00000007"' in line)
    lines[victim] = (
        lines[victim]
        .replace('"strike": ', '"strike": ,', 1)
        .replace('"notional', '"notional": ,"x', 1)
    )
    portfolio = parse_portfolio("\n".join(lines) + "\n")
    assert len(portfolio.positions) == 19
    [error] = portfolio.errors
    assert (error.index, error.position_id, error.field) == (7, "P00000007", "(json)")
    assert "not valid JSON" in error.message and "line" in error.message


def test_json_that_cannot_be_recovered_is_a_clear_document_error() -> None:
    with pytest.raises(PortfolioError, match=r"not valid JSON: .* line 1 column"):
        parse_portfolio('{"format": "mastr.portfolio/1", "positions": [}')


def test_the_generator_is_deterministic_and_seed_dependent() -> None:
    assert _written(50, seed=11) == _written(50, seed=11)
    assert _written(50, seed=11) != _written(50, seed=12)
    assert json.loads(_written(50, seed=11)) == generate.generate_document(50, seed=11)


def test_the_generator_breaks_exactly_the_requested_positions() -> None:
    clean = generate.generate_document(200, seed=9)
    broken = generate.generate_document(200, seed=9, invalid=4)
    portfolio = validate_portfolio(copy.deepcopy(broken))
    assert len(portfolio.errors) == 4
    assert len(portfolio.positions) == 196
    changed = [
        i
        for i, (a, b) in enumerate(zip(clean["positions"], broken["positions"], strict=True))
        if a != b
    ]
    assert sorted(e.index for e in portfolio.errors) == changed


def test_the_generator_command_writes_a_file(tmp_path: Any) -> None:
    out = tmp_path / "p.json"
    assert generate.main(["--positions", "30", "--seed", "2", "-o", str(out)]) == 0
    assert len(parse_portfolio(out.read_text()).positions) == 30
