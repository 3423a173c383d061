"""Closed-form pricing for the three instruments mastr values.

Pure functions of floats and a :class:`Market`; nothing here knows about palm.

Conventions (also in README.md):

- Times are year fractions from the valuation date (``maturity_y``).
- A :class:`Curve` holds zero rates at tenors, interpolated linearly and
  extrapolated flat; ``continuous`` rates discount as ``exp(-r t)``,
  ``annual`` ones as ``(1 + r) ** -t``.
- ``vega`` is the PV change for one volatility point (0.01 absolute).
- ``dv01`` is the PV gain when every zero rate of the position's curve falls by
  one basis point, by central difference: ``(PV(r - 1bp) - PV(r + 1bp)) / 2``.
- ``delta`` is dPV/dSpot: for an option, in units of the underlying; for an FX
  forward, in units of the foreign currency.
- FX rates ``fx[c]`` are the value of one unit of ``c`` in the reporting
  currency.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BASIS_POINT",
    "Curve",
    "Market",
    "Valuation",
    "black_scholes",
    "bond_pv",
    "fx_forward",
    "norm_cdf",
    "norm_pdf",
    "value_position",
]

BASIS_POINT = 1e-4
VOL_POINT = 0.01
_SQRT2 = math.sqrt(2.0)
_SQRT2PI = math.sqrt(2.0 * math.pi)


def norm_cdf(x: float) -> float:
    """Standard normal cumulative distribution, through ``math.erf``."""
    return 0.5 * (1.0 + math.erf(x / _SQRT2))


def norm_pdf(x: float) -> float:
    """Standard normal density."""
    return math.exp(-0.5 * x * x) / _SQRT2PI


@dataclass(frozen=True)
class Curve:
    """Zero rates at tenors (years), linear in between, flat outside."""

    tenors_y: tuple[float, ...]
    zero_rates: tuple[float, ...]
    compounding: str = "continuous"

    @classmethod
    def flat(cls, rate: float, compounding: str = "continuous") -> Curve:
        return cls((1.0,), (rate,), compounding)

    def zero_rate(self, t_y: float) -> float:
        tenors, rates = self.tenors_y, self.zero_rates
        if t_y <= tenors[0]:
            return rates[0]
        if t_y >= tenors[-1]:
            return rates[-1]
        i = bisect.bisect_left(tenors, t_y)
        w = (t_y - tenors[i - 1]) / (tenors[i] - tenors[i - 1])
        return rates[i - 1] + w * (rates[i] - rates[i - 1])

    def discount_at_rate(self, rate: float, t_y: float) -> float:
        """Discount factor to ``t_y`` for a zero rate in this curve's compounding."""
        if self.compounding == "annual":
            return float((1.0 + rate) ** -t_y)
        return math.exp(-rate * t_y)

    def discount(self, t_y: float, bump: float = 0.0) -> float:
        """Discount factor to ``t_y`` with every zero rate shifted by ``bump``."""
        return self.discount_at_rate(self.zero_rate(t_y) + bump, t_y)

    def continuous_rate(self, t_y: float) -> float:
        """The continuously compounded rate with the same discount factor to ``t_y``."""
        r = self.zero_rate(t_y)
        if self.compounding == "annual":
            return math.log1p(r)
        return r


@dataclass(frozen=True)
class Market:
    """Everything a valuation reads: the same for every position of a portfolio."""

    reporting_currency: str
    fx: Mapping[str, float]
    curves: Mapping[str, Curve]
    spots: Mapping[str, tuple[str, float]]  # underlying -> (currency, price)
    volatilities: Mapping[str, float]

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], reporting_currency: str) -> Market:
        """Build from the ``market`` object of a (validated) portfolio document."""
        curves = {
            ccy: Curve(
                tuple(float(t) for t in c["tenors_y"]),
                tuple(float(r) for r in c["zero_rates"]),
                str(c.get("compounding", "continuous")),
            )
            for ccy, c in doc["curves"].items()
        }
        spots = {name: (str(s["currency"]), float(s["price"])) for name, s in doc["spots"].items()}
        return cls(
            reporting_currency=reporting_currency,
            fx={ccy: float(v) for ccy, v in doc["fx"].items()},
            curves=curves,
            spots=spots,
            volatilities={name: float(v) for name, v in doc["volatilities"].items()},
        )

    def fx_spot(self, foreign: str, domestic: str) -> float:
        """Units of ``domestic`` for one unit of ``foreign`` today."""
        return self.fx[foreign] / self.fx[domestic]


@dataclass(frozen=True)
class Valuation:
    """One position's result: PV in its own and the reporting currency, plus risk."""

    position_id: str
    book: str
    currency: str
    pv: float
    pv_reporting: float
    delta: float
    vega: float
    dv01: float

    def as_tuple(self) -> tuple[str, str, str, float, float, float, float, float]:
        return (
            self.position_id,
            self.book,
            self.currency,
            self.pv,
            self.pv_reporting,
            self.delta,
            self.vega,
            self.dv01,
        )

    @classmethod
    def from_tuple(cls, row: Sequence[Any]) -> Valuation:
        return cls(
            str(row[0]),
            str(row[1]),
            str(row[2]),
            float(row[3]),
            float(row[4]),
            float(row[5]),
            float(row[6]),
            float(row[7]),
        )


def black_scholes(
    kind: str, spot: float, strike: float, t_y: float, rate: float, vol: float
) -> tuple[float, float, float]:
    """European option on a non-dividend stock: ``(price, delta, vega per unit vol)``.

    ``rate`` is continuously compounded. ``kind`` is ``"call"`` or ``"put"``.
    """
    if t_y <= 0.0 or vol <= 0.0:
        forward_value = spot - strike * math.exp(-rate * max(t_y, 0.0))
        if kind == "call":
            return max(forward_value, 0.0), 1.0 if forward_value > 0 else 0.0, 0.0
        return max(-forward_value, 0.0), -1.0 if forward_value < 0 else 0.0, 0.0
    sqrt_t = math.sqrt(t_y)
    d1 = (math.log(spot / strike) + (rate + 0.5 * vol * vol) * t_y) / (vol * sqrt_t)
    d2 = d1 - vol * sqrt_t
    discounted_strike = strike * math.exp(-rate * t_y)
    vega = spot * norm_pdf(d1) * sqrt_t
    if kind == "call":
        price = spot * norm_cdf(d1) - discounted_strike * norm_cdf(d2)
        return price, norm_cdf(d1), vega
    price = discounted_strike * norm_cdf(-d2) - spot * norm_cdf(-d1)
    return price, norm_cdf(d1) - 1.0, vega


def bond_cashflows(
    notional: float, coupon_rate: float, maturity_y: float, frequency: int
) -> list[tuple[float, float]]:
    """``(time_y, amount)`` of the remaining coupons and the redemption."""
    step = 1.0 / frequency
    coupon = notional * coupon_rate / frequency
    flows: list[tuple[float, float]] = []
    k = 0
    while True:
        t = maturity_y - k * step
        if t <= 1e-12:
            break
        flows.append((t, coupon + (notional if k == 0 else 0.0)))
        k += 1
    flows.reverse()
    return flows


def bond_pv(
    notional: float, coupon_rate: float, maturity_y: float, frequency: int, curve: Curve
) -> tuple[float, float]:
    """Fixed-rate bond ``(pv, dv01)`` by discounting its cash flows on ``curve``."""
    flows = bond_cashflows(notional, coupon_rate, maturity_y, frequency)

    pv = down = up = 0.0
    for t, amount in flows:
        r = curve.zero_rate(t)
        pv += amount * curve.discount_at_rate(r, t)
        down += amount * curve.discount_at_rate(r - BASIS_POINT, t)
        up += amount * curve.discount_at_rate(r + BASIS_POINT, t)
    return pv, (down - up) / 2.0


def fx_forward(
    notional_foreign: float,
    strike: float,
    maturity_y: float,
    spot: float,
    foreign_curve: Curve,
    domestic_curve: Curve,
) -> tuple[float, float, float]:
    """Buy ``notional_foreign`` at ``strike`` (domestic per foreign) at maturity.

    Returns ``(pv in domestic, delta in foreign units, dv01 on the domestic curve)``.
    """
    df_foreign = foreign_curve.discount(maturity_y)

    def pv_at(bump: float) -> float:
        return notional_foreign * (
            spot * df_foreign - strike * domestic_curve.discount(maturity_y, bump)
        )

    pv = pv_at(0.0)
    dv01 = (pv_at(-BASIS_POINT) - pv_at(BASIS_POINT)) / 2.0
    return pv, notional_foreign * df_foreign, dv01


def value_position(position: Mapping[str, Any], market: Market) -> Valuation:
    """Value one validated position (see ``schema.validate_position``)."""
    inst = position["instrument"]
    kind = inst["type"]
    currency = position["currency"]
    delta = vega = dv01 = 0.0
    if kind == "european_option":
        quantity = float(inst["quantity"])
        _, spot = market.spots[inst["underlying"]]
        curve = market.curves[currency]
        t = float(inst["maturity_y"])
        price, unit_delta, unit_vega = black_scholes(
            inst["option_type"],
            spot,
            float(inst["strike"]),
            t,
            curve.continuous_rate(t),
            market.volatilities[inst["underlying"]],
        )
        pv = quantity * price
        delta = quantity * unit_delta
        vega = quantity * unit_vega * VOL_POINT
    elif kind == "fixed_rate_bond":
        pv, dv01 = bond_pv(
            float(inst["notional"]),
            float(inst["coupon_rate"]),
            float(inst["maturity_y"]),
            int(inst["frequency"]),
            market.curves[currency],
        )
    elif kind == "fx_forward":
        foreign = inst["foreign_currency"]
        pv, delta, dv01 = fx_forward(
            float(inst["notional_foreign"]),
            float(inst["strike"]),
            float(inst["maturity_y"]),
            market.fx_spot(foreign, currency),
            market.curves[foreign],
            market.curves[currency],
        )
    else:
        raise ValueError(f"unknown instrument type {kind!r}")
    return Valuation(
        position_id=position["id"],
        book=position["book"],
        currency=currency,
        pv=pv,
        pv_reporting=pv * market.fx[currency],
        delta=delta,
        vega=vega,
        dv01=dv01,
    )
