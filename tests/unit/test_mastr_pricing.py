"""mastr pricing against closed forms and textbook values."""

from __future__ import annotations

import math

import pytest

from examples.mastr.pricing import (
    BASIS_POINT,
    Curve,
    Market,
    black_scholes,
    bond_cashflows,
    bond_pv,
    fx_forward,
    norm_cdf,
    value_position,
)


def test_norm_cdf_matches_known_points() -> None:
    assert norm_cdf(0.0) == 0.5
    assert norm_cdf(1.96) == pytest.approx(0.9750021048517795, abs=1e-12)
    assert norm_cdf(-1.0) == pytest.approx(0.15865525393145707, abs=1e-12)


def test_black_scholes_matches_the_hull_textbook_example() -> None:
    # Hull, Options Futures and Other Derivatives: S=42, K=40, r=10%, vol=20%, T=0.5.
    call, call_delta, _ = black_scholes("call", 42.0, 40.0, 0.5, 0.10, 0.20)
    put, put_delta, _ = black_scholes("put", 42.0, 40.0, 0.5, 0.10, 0.20)
    assert call == pytest.approx(4.7594, abs=1e-4)
    assert put == pytest.approx(0.8086, abs=1e-4)
    assert call_delta == pytest.approx(0.7791, abs=1e-4)
    assert put_delta == pytest.approx(call_delta - 1.0, abs=1e-15)


@pytest.mark.parametrize(
    ("spot", "strike", "t_y", "rate", "vol"),
    [
        (100.0, 100.0, 1.0, 0.05, 0.2),
        (50.0, 80.0, 2.5, 0.01, 0.45),
        (120.0, 90.0, 0.1, -0.005, 0.3),
    ],
)
def test_put_call_parity_holds(
    spot: float, strike: float, t_y: float, rate: float, vol: float
) -> None:
    call, _, call_vega = black_scholes("call", spot, strike, t_y, rate, vol)
    put, _, put_vega = black_scholes("put", spot, strike, t_y, rate, vol)
    assert call - put == pytest.approx(spot - strike * math.exp(-rate * t_y), abs=1e-10)
    assert call_vega == pytest.approx(put_vega, rel=1e-15)


def test_delta_and_vega_agree_with_finite_differences() -> None:
    h = 1e-4
    price, delta, vega = black_scholes("call", 100.0, 95.0, 0.75, 0.03, 0.25)
    up = black_scholes("call", 100.0 + h, 95.0, 0.75, 0.03, 0.25)[0]
    down = black_scholes("call", 100.0 - h, 95.0, 0.75, 0.03, 0.25)[0]
    assert delta == pytest.approx((up - down) / (2 * h), rel=1e-7)
    vup = black_scholes("call", 100.0, 95.0, 0.75, 0.03, 0.25 + h)[0]
    vdown = black_scholes("call", 100.0, 95.0, 0.75, 0.03, 0.25 - h)[0]
    assert vega == pytest.approx((vup - vdown) / (2 * h), rel=1e-7)
    assert price > 0


def test_zero_coupon_bond_is_the_discount_factor() -> None:
    pv, dv01 = bond_pv(100.0, 0.0, 3.0, 1, Curve.flat(0.04))
    assert pv == pytest.approx(100.0 * math.exp(-0.12), rel=1e-14)
    # d/dr of 100 e^{-3r} is -3 PV; central bump is exact to O(bp^2).
    assert dv01 == pytest.approx(3.0 * pv * BASIS_POINT, rel=1e-7)


def test_par_bond_prices_at_par_with_annual_rates() -> None:
    pv, dv01 = bond_pv(1000.0, 0.05, 10.0, 1, Curve.flat(0.05, "annual"))
    assert pv == pytest.approx(1000.0, rel=1e-12)
    assert dv01 > 0


def test_bond_cashflows_stub_first_coupon() -> None:
    flows = bond_cashflows(100.0, 0.06, 1.25, 2)
    assert [t for t, _ in flows] == pytest.approx([0.25, 0.75, 1.25])
    assert [a for _, a in flows] == pytest.approx([3.0, 3.0, 103.0])


def test_curve_interpolates_linearly_and_extrapolates_flat() -> None:
    curve = Curve((1.0, 3.0), (0.02, 0.04))
    assert curve.zero_rate(0.5) == 0.02
    assert curve.zero_rate(2.0) == pytest.approx(0.03)
    assert curve.zero_rate(10.0) == 0.04
    annual = Curve((1.0,), (0.05,), "annual")
    assert annual.discount(2.0) == pytest.approx(1 / 1.05**2)
    assert math.exp(-annual.continuous_rate(2.0) * 2.0) == pytest.approx(annual.discount(2.0))


def test_fx_forward_at_the_forward_rate_is_worth_nothing() -> None:
    dom, fgn = Curve.flat(0.03), Curve.flat(0.01)
    spot, t = 1.1, 1.5
    forward = spot * fgn.discount(t) / dom.discount(t)
    pv, delta, dv01 = fx_forward(1_000_000.0, forward, t, spot, fgn, dom)
    assert pv == pytest.approx(0.0, abs=1e-8)
    assert delta == pytest.approx(1_000_000.0 * fgn.discount(t))
    assert dv01 == pytest.approx(
        -1_000_000.0 * forward * dom.discount(t) * t * BASIS_POINT, rel=1e-6
    )


def test_value_position_converts_pv_to_the_reporting_currency() -> None:
    market = Market(
        reporting_currency="EUR",
        fx={"EUR": 1.0, "USD": 0.9},
        curves={"EUR": Curve.flat(0.02), "USD": Curve.flat(0.04)},
        spots={"ACME": ("USD", 100.0)},
        volatilities={"ACME": 0.3},
    )
    position = {
        "id": "P1",
        "book": "B",
        "currency": "USD",
        "instrument": {
            "type": "european_option",
            "underlying": "ACME",
            "option_type": "put",
            "strike": 110.0,
            "maturity_y": 1.0,
            "quantity": -10,
        },
    }
    v = value_position(position, market)
    price, delta, vega = black_scholes("put", 100.0, 110.0, 1.0, 0.04, 0.3)
    assert v.pv == pytest.approx(-10 * price)
    assert v.pv_reporting == pytest.approx(v.pv * 0.9)
    assert v.delta == pytest.approx(-10 * delta)
    assert v.vega == pytest.approx(-10 * vega * 0.01)
    assert v.dv01 == 0.0
