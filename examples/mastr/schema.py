"""Reading and validating portfolio documents (format: README.md, portfolio.schema.json).

Two kinds of failure, kept apart on purpose:

- :class:`PortfolioError`: the document as a whole cannot be used (no market,
  bad market data, not JSON at all). Nothing is valued.
- :class:`PositionError`: one position is invalid. It names the position id
  (or its index when it has no usable id) and the field; the position is left
  out of the valuation and listed, every other position is still valued.

When a file is not valid JSON, :func:`load_portfolio` retries line by line in
the layout :mod:`examples.mastr.generate` writes (one position per line), so a
single broken line costs one position, reported with its line number.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from examples.mastr.pricing import Market

__all__ = [
    "FORMAT",
    "INSTRUMENT_FIELDS",
    "FieldError",
    "Portfolio",
    "PortfolioError",
    "PositionError",
    "load_portfolio",
    "parse_portfolio",
    "validate_market",
    "validate_portfolio",
    "validate_position",
]

FORMAT = "mastr.portfolio/1"
POSITION_FIELDS = frozenset({"id", "book", "currency", "instrument"})
INSTRUMENT_FIELDS: dict[str, frozenset[str]] = {
    "european_option": frozenset(
        {"type", "underlying", "option_type", "strike", "maturity_y", "quantity"}
    ),
    "fixed_rate_bond": frozenset({"type", "notional", "coupon_rate", "maturity_y", "frequency"}),
    "fx_forward": frozenset(
        {"type", "foreign_currency", "notional_foreign", "strike", "maturity_y"}
    ),
}
BOND_FREQUENCIES = (1, 2, 4, 12)
_ID_NEAR = re.compile(r'"id"\s*:\s*"([^"]{1,200})"')


class PortfolioError(ValueError):
    """The document cannot be valued at all."""


@dataclass(frozen=True)
class PositionError:
    """One invalid position: which one, which field, what is wrong."""

    index: int
    position_id: str | None
    field: str
    message: str

    def __str__(self) -> str:
        who = (
            f"position {self.position_id!r} (index {self.index})"
            if self.position_id is not None
            else f"position at index {self.index}"
        )
        return f"{who}: field {self.field!r}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "id": self.position_id,
            "field": self.field,
            "message": self.message,
        }


@dataclass
class Portfolio:
    """A validated portfolio: market data, the valid positions, the invalid ones."""

    reporting_currency: str
    market_doc: dict[str, Any]
    positions: list[dict[str, Any]]
    errors: list[PositionError] = field(default_factory=list)

    @property
    def market(self) -> Market:
        return Market.from_dict(self.market_doc, self.reporting_currency)


class FieldError(ValueError):
    """Raised by :func:`validate_position`: ``field`` is a dotted path in the position."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _number(obj: Mapping[str, Any], key: str, prefix: str) -> float:
    name = prefix + key
    if key not in obj:
        raise FieldError(name, "is required")
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FieldError(name, f"must be a number, got {value!r}")
    if not math.isfinite(value):
        raise FieldError(name, f"must be finite, got {value!r}")
    return float(value)


def _positive(obj: Mapping[str, Any], key: str, prefix: str) -> float:
    value = _number(obj, key, prefix)
    if value <= 0.0:
        raise FieldError(prefix + key, f"must be > 0, got {obj[key]!r}")
    return value


def _string(obj: Mapping[str, Any], key: str, prefix: str, choices: Iterable[str] = ()) -> str:
    name = prefix + key
    if key not in obj:
        raise FieldError(name, "is required")
    value = obj[key]
    if not isinstance(value, str) or not value:
        raise FieldError(name, f"must be a non-empty string, got {value!r}")
    allowed = sorted(choices)
    if allowed and value not in allowed:
        raise FieldError(name, f"must be one of {', '.join(allowed)}; got {value!r}")
    return value


def _no_extra(obj: Mapping[str, Any], allowed: frozenset[str], prefix: str) -> None:
    for key in obj:
        if key not in allowed:
            raise FieldError(prefix + str(key), "is not a known field")


def validate_market(doc: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Check the document header and market data; ``(reporting_currency, market)``."""
    if not isinstance(doc, Mapping):
        raise PortfolioError("the document must be a JSON object")
    if doc.get("format") != FORMAT:
        raise PortfolioError(f"field 'format' must be {FORMAT!r}, got {doc.get('format')!r}")
    market = doc.get("market")
    if not isinstance(market, Mapping):
        raise PortfolioError("field 'market' must be an object")
    for part in ("fx", "curves", "spots", "volatilities"):
        if not isinstance(market.get(part), Mapping):
            raise PortfolioError(f"field 'market.{part}' must be an object")
    try:
        reporting = _string(doc, "reporting_currency", "")
        for ccy in market["fx"]:
            _positive(market["fx"], ccy, "market.fx.")
        if reporting not in market["fx"]:
            raise FieldError("market.fx", f"has no rate for the reporting currency {reporting!r}")
        if market["fx"][reporting] != 1.0:
            raise FieldError(f"market.fx.{reporting}", "must be 1 (the reporting currency)")
        for ccy, curve in market["curves"].items():
            _check_curve(curve, f"market.curves.{ccy}.")
            if ccy not in market["fx"]:
                raise FieldError(f"market.curves.{ccy}", "has no FX rate in market.fx")
        for name, spot in market["spots"].items():
            prefix = f"market.spots.{name}."
            if not isinstance(spot, Mapping):
                raise FieldError(prefix[:-1], "must be an object")
            _string(spot, "currency", prefix, market["curves"])
            _positive(spot, "price", prefix)
            _positive(market["volatilities"], name, "market.volatilities.")
    except FieldError as exc:
        raise PortfolioError(f"field {exc.field!r}: {exc.message}") from None
    return reporting, dict(market)


def _check_curve(curve: Any, prefix: str) -> None:
    if not isinstance(curve, Mapping):
        raise FieldError(prefix[:-1], "must be an object")
    _string(curve, "compounding", prefix, ("continuous", "annual"))
    tenors, rates = curve.get("tenors_y"), curve.get("zero_rates")
    if not isinstance(tenors, list) or not tenors:
        raise FieldError(prefix + "tenors_y", "must be a non-empty list")
    if not isinstance(rates, list) or len(rates) != len(tenors):
        raise FieldError(prefix + "zero_rates", "must be a list as long as tenors_y")
    tenor_map = {str(i): t for i, t in enumerate(tenors)}
    rate_map = {str(i): r for i, r in enumerate(rates)}
    for i in range(len(tenors)):
        _positive(tenor_map, str(i), prefix + "tenors_y.")
        rate = _number(rate_map, str(i), prefix + "zero_rates.")
        if curve["compounding"] == "annual" and rate <= -1.0:
            raise FieldError(f"{prefix}zero_rates.{i}", "must be > -1 for annual compounding")
        if i and tenors[i] <= tenors[i - 1]:
            raise FieldError(f"{prefix}tenors_y.{i}", "tenors must increase")


def validate_position(position: Any, market: Mapping[str, Any]) -> None:
    """Raise :class:`FieldError` naming the first invalid field of ``position``."""
    if not isinstance(position, Mapping):
        raise FieldError("(position)", f"must be an object, got {type(position).__name__}")
    _string(position, "id", "")
    _no_extra(position, POSITION_FIELDS, "")
    _string(position, "book", "")
    currency = _string(position, "currency", "", market["curves"])
    inst = position.get("instrument")
    if not isinstance(inst, Mapping):
        raise FieldError("instrument", "must be an object" if inst is not None else "is required")
    kind = _string(inst, "type", "instrument.", INSTRUMENT_FIELDS)
    _no_extra(inst, INSTRUMENT_FIELDS[kind], "instrument.")
    p = "instrument."
    _positive(inst, "maturity_y", p)
    if kind == "european_option":
        underlying = _string(inst, "underlying", p, market["spots"])
        _string(inst, "option_type", p, ("call", "put"))
        _positive(inst, "strike", p)
        _number(inst, "quantity", p)
        spot_ccy = market["spots"][underlying]["currency"]
        if currency != spot_ccy:
            raise FieldError("currency", f"must be {spot_ccy!r}, the currency of {underlying!r}")
    elif kind == "fixed_rate_bond":
        _number(inst, "notional", p)
        if _number(inst, "coupon_rate", p) <= -1.0:
            raise FieldError(p + "coupon_rate", "must be > -1")
        frequency = inst.get("frequency")
        if isinstance(frequency, bool) or frequency not in BOND_FREQUENCIES:
            raise FieldError(p + "frequency", f"must be one of 1, 2, 4, 12; got {frequency!r}")
    else:
        foreign = _string(inst, "foreign_currency", p, market["curves"])
        if foreign == currency:
            raise FieldError(p + "foreign_currency", "must differ from the position currency")
        _number(inst, "notional_foreign", p)
        _positive(inst, "strike", p)


def _position_id(position: Any) -> str | None:
    if isinstance(position, Mapping) and isinstance(position.get("id"), str):
        return str(position["id"]) or None
    return None


def validate_portfolio(doc: Any, extra_errors: Iterable[PositionError] = ()) -> Portfolio:
    """Validate a parsed document; invalid positions are collected, not raised."""
    reporting, market = validate_market(doc)
    raw = doc.get("positions")
    if not isinstance(raw, list):
        raise PortfolioError("field 'positions' must be a list")
    errors = list(extra_errors)
    valid: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for index, position in enumerate(raw):
        pid = _position_id(position)
        try:
            validate_position(position, market)
            if pid in seen:
                raise FieldError("id", f"duplicates the id of the position at index {seen[pid]}")
        except FieldError as exc:
            errors.append(PositionError(index, pid, exc.field, exc.message))
            continue
        assert pid is not None
        seen[pid] = index
        valid.append(dict(position))
    errors.sort(key=lambda e: e.index)
    return Portfolio(reporting, market, valid, errors)


def parse_portfolio(text: str) -> Portfolio:
    """Parse and validate a document; see :func:`load_portfolio`."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        return _recover(text, exc)
    return validate_portfolio(doc)


def load_portfolio(path: str | Path) -> Portfolio:
    """Read, parse and validate a portfolio file."""
    return parse_portfolio(Path(path).read_text(encoding="utf-8"))


def _recover(text: str, error: json.JSONDecodeError) -> Portfolio:
    """Parse a malformed document one position line at a time, if it has that layout."""
    lines = text.splitlines()
    head_end = next((i for i, line in enumerate(lines) if line.strip() == '"positions": ['), None)
    if head_end is None or lines[-1].strip() != "}" or lines[-2].strip() != "]":
        raise PortfolioError(
            f"not valid JSON: {error.msg} at line {error.lineno} column {error.colno}"
            + _near(text, error.pos)
        ) from None
    header = "\n".join([*lines[: head_end + 1], "]", "}"])
    try:
        doc = json.loads(header)
    except json.JSONDecodeError as exc:
        raise PortfolioError(
            f"not valid JSON in the header: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    positions: list[Any] = []
    errors: list[PositionError] = []
    for index, (lineno, line) in enumerate(_position_lines(lines, head_end + 1)):
        try:
            positions.append(json.loads(line))
        except json.JSONDecodeError as exc:
            match = _ID_NEAR.search(line)
            errors.append(
                PositionError(
                    index,
                    match.group(1) if match else None,
                    "(json)",
                    f"not valid JSON on line {lineno}: {exc.msg} at column {exc.colno}",
                )
            )
            positions.append(None)
    doc["positions"] = positions
    portfolio = validate_portfolio(doc)
    broken = {e.index for e in errors}
    portfolio.errors = sorted(
        [e for e in portfolio.errors if e.index not in broken] + errors, key=lambda e: e.index
    )
    return portfolio


def _position_lines(lines: list[str], start: int) -> Iterator[tuple[int, str]]:
    for i in range(start, len(lines) - 2):
        line = lines[i].strip()
        if line.endswith(","):
            line = line[:-1]
        if line:
            yield i + 1, line


def _near(text: str, pos: int) -> str:
    matches = list(_ID_NEAR.finditer(text, max(0, pos - 4000), pos))
    return f" (after position {matches[-1].group(1)!r})" if matches else ""
