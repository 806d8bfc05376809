"""Vega hedging with listed options and the vega limit (docs/design.md, "Vega hedging"): one hedge
trade priced by hand, a book kept vega-flat through a parallel IV shock, a term-structure twist
that only tenor-matched hedging neutralises, the limit's cuts against their closed form, and the
hedge's money traced through the ledger."""

from __future__ import annotations

import datetime as dt
import math
import re

import numpy as np
import polars as pl
import pytest
from scenarios import T0, assert_reconciles, hourly_flow, hourly_market, no_fees

from backtest.config import build_strategy
from backtest.errors import InputError
from backtest.inputs.surface import Surface
from backtest.inputs.synthetic_flow import NS_PER_DAY, listed_expiries
from backtest.pricing import greeks, price
from backtest.runner import simulate_frames

SPOT, IV = 2000.0, 0.6
HOURS_PER_YEAR = 365 * 24
# T0 is Monday 2024-01-01. Weekly and monthly expiries at 08:00 UTC: the band policy's 30-day
# tenor picks Friday 2 February (2.3 days past T0 + 30 d; Friday 26 January is 4.7 days short).
FEB_2 = dt.datetime(2024, 2, 2, 8, tzinfo=dt.UTC)
JAN_19 = dt.datetime(2024, 1, 19, 8, tzinfo=dt.UTC)
MAR_29 = dt.datetime(2024, 3, 29, 8, tzinfo=dt.UTC)  # the last Friday of March: a monthly


def hours_to(when: dt.datetime) -> float:
    return (when - T0).total_seconds() / 3600


def hedged(policy: str = "band", **sections: dict) -> dict:
    """No fees, no delta hedge: every move of the book is the option book's own."""
    strategy = no_fees(
        hedge={"policy": "none"},
        vega_hedge={"policy": policy, "band": 1e-7, "spread_vol": 0.01},
    )
    for name, keys in sections.items():
        strategy[name] = strategy.get(name, {}) | keys
    return strategy


def test_the_calendar_lists_the_expiries_the_tests_assume():
    lo, hi = int(T0.timestamp() * 1e9), int(T0.timestamp() * 1e9) + 90 * NS_PER_DAY
    listed = listed_expiries(lo, hi, ["weekly", "monthly"])
    expected = [int(d.timestamp() * 1e9) for d in (JAN_19, FEB_2, MAR_29)]
    assert set(expected) <= set(listed.tolist())
    target = lo + 30 * NS_PER_DAY
    assert listed[np.argmin(np.abs(listed - target))] == expected[1]


def test_one_vega_hedge_trade_is_priced_at_market_vol_plus_half_the_spread():
    """The pool sells 100 calls (short vega); the band policy buys the 2 February at-the-money
    call (forward 2000, strike 2000) at IV + half the spread, pays the fee per contract, and
    leaves the book vega-flat. Its cost is the spread over the mark plus the fee."""
    spread, fee_spot = 0.01, 0.0003
    market = hourly_market([SPOT] * 3, IV)
    flow = hourly_flow((0, 24 * 20, 2100, "C", 1, 100.0))
    # a band of 1,000 vega: the hour's decay of the hedged book stays inside it
    strategy = hedged(vega_hedge={"spread_vol": spread, "fee_spot": fee_spot, "band": 1e-5})
    tables, summary = simulate_frames(strategy, market, flow)
    option = tables.hedges.filter(pl.col("instrument") == "option")
    assert option.height == 1
    h = option.row(0, named=True)
    assert (h["expiry"], h["strike"], h["kind"]) == (FEB_2, 2000.0, "C")
    tau = hours_to(FEB_2) / HOURS_PER_YEAR
    sold_vega = 100.0 * float(greeks("C", SPOT, 2100.0, 20 / 365, IV).vega)
    vega = float(greeks("C", SPOT, 2000.0, tau, IV).vega)
    qty = sold_vega / vega
    mark = float(price("C", SPOT, 2000.0, tau, IV))
    paid = float(price("C", SPOT, 2000.0, tau, IV + spread / 2))
    fee = qty * min(fee_spot * SPOT, 0.125 * paid)
    assert h["qty"] == pytest.approx(qty, rel=1e-12)
    assert h["iv"] == pytest.approx(IV + spread / 2, rel=1e-15)
    assert h["exec_price"] == pytest.approx(paid, rel=1e-12)
    assert h["slippage_cost"] == pytest.approx(qty * (paid - mark), rel=1e-10)
    assert h["fee"] == pytest.approx(fee, rel=1e-12)
    assert h["vega"] == pytest.approx(sold_vega, rel=1e-12)
    first = tables.steps.row(0, named=True)
    assert abs(first["book_vega"]) < 1e-9 * sold_vega
    assert first["listed_vega"] == pytest.approx(sold_vega, rel=1e-12)
    assert first["pnl_vega_hedge_cost"] == pytest.approx(-(h["slippage_cost"] + fee), rel=1e-12)
    assert summary["vega_hedge_cost"][0] == pytest.approx(h["slippage_cost"] + fee, rel=1e-12)
    assert summary["n_vega_hedges"][0] == 1 and summary["n_hedges"][0] == 0
    assert_reconciles(tables, summary)


def test_a_vega_flat_book_stays_flat_through_a_parallel_iv_shock():
    """Short 30-day 2100 calls; IV jumps 0.6 -> 0.8 at hour 10. Hedged every tick back to zero
    vega with the at-the-money listed option, the book's vega PnL is under 5 % of the unhedged
    book's."""
    ivs = [IV] * 10 + [0.8] * 10
    market = hourly_market([SPOT] * 20, ivs)
    flow = hourly_flow((0, 24 * 30, 2100, "C", 1, 100.0), (3, 24 * 30, 1900, "P", 1, 80.0))
    bare, _ = simulate_frames(hedged("band", vega_hedge={"policy": "none"}), market, flow)
    flat, summary = simulate_frames(hedged("band"), market, flow)
    unhedged = float(bare.steps["pnl_vega"].sum())
    assert unhedged < -0.1 * 100.0 * float(greeks("C", SPOT, 2100.0, 30 / 365, IV).vega) * 0.2
    assert abs(float(flat.steps["pnl_vega"].sum())) <= 0.05 * abs(unhedged)
    assert summary["pnl_vega_hedge"][0] > 0  # the long listed options earned the spike
    assert_reconciles(flat, summary)


def twisted_surface(shift: float) -> Surface:
    """Flat 0.6 until hour 5, then short tenors up by `shift` and long ones down by as much."""
    tenors = np.array([7 / 365, 100 / 365])
    before = np.full((2, 3), IV)
    after = np.stack([np.full(3, IV + shift), np.full(3, IV - shift)])
    ts = [int((T0 + dt.timedelta(hours=h)).timestamp() * 1e9) for h in (0, 5)]
    return Surface(
        ts=np.array(ts, np.int64),
        tenors=tenors,
        log_moneyness=np.array([-1.0, 0.0, 1.0]),
        vols=np.stack([before, after]),
    )


def test_tenor_matched_hedging_neutralises_a_term_structure_twist_the_band_does_not():
    """Short 19 January calls, long 29 March calls, net vega zero: the band policy sees nothing
    to hedge and the twist (short end up, long end down) costs the book on both legs;
    tenor-matched hedging has hedged each expiry with its own listed option and loses under
    5 % of that."""
    near, far = hours_to(JAN_19), hours_to(MAR_29)
    v_near = float(greeks("C", SPOT, 2000.0, near / HOURS_PER_YEAR, IV).vega)
    v_far = float(greeks("C", SPOT, 2000.0, far / HOURS_PER_YEAR, IV).vega)
    n_far = 100.0 * v_near / v_far
    market = hourly_market([SPOT] * 10, IV)
    flow = hourly_flow((0, near, 2000, "C", 1, 100.0), (0, far, 2000, "C", -1, n_far))
    surface = twisted_surface(0.1)
    wide = {"band": 1e-4}  # 10,000 vega: the legs are 25,000 each, their net drifts by less
    band, _ = simulate_frames(hedged("band", vega_hedge=wide), market, flow, surface=surface)
    matched, summary = simulate_frames(
        hedged("tenor_matched", vega_hedge=wide), market, flow, surface=surface
    )
    assert band.hedges.height == 0  # net vega zero: nothing for the band to do
    option_pnl = ["pnl_vega", "pnl_volga", "pnl_residual", "pnl_theta"]
    lost = float(band.steps.select(option_pnl).sum().sum_horizontal()[0])
    kept = float(matched.steps.select(option_pnl).sum().sum_horizontal()[0])
    assert lost < -0.1 * 100.0 * v_near * 0.1  # the twist hurts the unhedged term structure
    assert abs(kept) <= 0.05 * abs(lost)
    hedges = matched.hedges.filter(pl.col("instrument") == "option")
    assert set(hedges["expiry"].to_list()) == {JAN_19, MAR_29}
    assert_reconciles(matched, summary)


def test_the_vega_limit_cuts_fills_that_add_vega_and_never_those_that_remove_it():
    """max_vega 1e-4 of a 1 M pool = 10,000 of book vega (per 1.00 of vol). Traders buy 30-day
    ATM calls in rows of 30 contracts: the first fills, the second up to the limit, the third
    not at all; a trader selling calls back is never cut."""
    market = hourly_market([SPOT] * 3, IV)
    tau = 24 * 30
    v = float(greeks("C", SPOT, 2000.0, tau / HOURS_PER_YEAR, IV).vega)
    limit = 1e-4 * 1_000_000.0 / 0.01
    rows = [(0, tau, 2000, "C", 1, 30.0), (0, tau, 2000, "C", 1, 30.0)]
    rows += [(1, tau, 2000, "C", 1, 30.0), (1, tau, 2000, "C", -1, 10.0)]
    tables, summary = simulate_frames(
        no_fees(hedge={"policy": "none"}, pricing={"max_vega": 1e-4}), market, hourly_flow(*rows)
    )
    trades = tables.trades.sort("flow_row")
    assert 30 * v < limit < 60 * v  # the second row is the one that crosses it
    # vega per contract moves by an hour of time decay between ticks 0 and 1: tiny
    second = (limit - 30.0 * v) / v
    assert trades["filled"][0] == 30.0 and trades["reject_reason"][0] == ""
    assert trades["filled"][1] == pytest.approx(second, rel=1e-12)
    assert trades["reject_reason"][1] == "vega_limit"
    # an hour later each contract carries a little less vega: room for what that freed
    v1 = float(greeks("C", SPOT, 2000.0, (tau - 1) / HOURS_PER_YEAR, IV).vega)
    limit1 = 1e-4 * float(tables.steps["nav"][1]) / 0.01  # NAV has earned an hour's theta
    assert trades["filled"][2] == pytest.approx((limit1 - (30.0 + second) * v1) / v1, rel=1e-9)
    assert trades["filled"][2] < 0.01 * 30.0
    assert trades["reject_reason"][2] == "vega_limit"
    assert trades["filled"][3] == 10.0 and trades["reject_reason"][3] == ""
    assert summary["n_partial_vega_limit"][0] + summary["n_rejected_vega_limit"][0] == 2
    steps = tables.steps
    assert (steps["book_vega"].abs() <= 1e-4 * steps["nav"] / 0.01 * (1 + 1e-9)).all()


def test_vega_hedge_money_is_in_the_ledger():
    """Cash after the run = capital + premiums - what the listed options cost (qty x price paid
    + fee) + what every option paid at expiry, all expiring inside the run."""
    days = 8
    spots = SPOT * np.exp(
        np.cumsum(np.r_[0.0, np.random.default_rng(3).normal(0, 0.01, 24 * days - 1)])
    )
    market = hourly_market(spots, IV)
    flow = hourly_flow((0, 30, 2000, "C", 1, 50.0), (2, 40, 1950, "P", 1, 40.0))
    strategy = hedged(
        "band",
        vega_hedge={"expiries": ["daily"], "min_tenor_days": 1.0, "max_tenor_days": 2.0},
    )
    tables, summary = simulate_frames(strategy, market, flow)
    hedges = tables.hedges.filter(pl.col("instrument") == "option")
    assert hedges.height > 0
    ts = market["ts"].to_numpy()
    cash = 1_000_000.0 + float(tables.trades["premium"].sum())
    cash -= float((hedges["qty"] * hedges["exec_price"] + hedges["fee"]).sum())
    fills = tables.trades.select(
        "expiry", "strike", "kind", qty=-pl.col("side").cast(pl.Float64) * pl.col("filled")
    )
    moves = pl.concat([fills, hedges.select("expiry", "strike", "kind", "qty")])
    for (expiry, strike, kind), rows in moves.group_by(["expiry", "strike", "kind"]):
        at = int(np.searchsorted(ts, np.datetime64(expiry.replace(tzinfo=None), "us"), "left"))
        assert at < len(ts)
        cash += float(rows["qty"].sum()) * max((1 if kind == "C" else -1) * (spots[at] - strike), 0)
    last = tables.steps.row(-1, named=True)
    assert last["n_live_series"] == 0
    assert last["nav"] == pytest.approx(cash, rel=1e-12)
    assert last["cash"] == pytest.approx(cash, rel=1e-12)
    assert_reconciles(tables, summary)


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"policy": "sometimes"}, "[vega_hedge] policy"),
        ({"band": 0.0}, "[vega_hedge] band"),
        ({"band": 1e-4, "target": 2e-4}, "must not exceed band"),
        ({"min_tenor_days": 30.0, "max_tenor_days": 10.0}, "must exceed min_tenor_days"),
        ({"spread_vol": -0.01}, "[vega_hedge] spread_vol"),
        ({"expiries": ["quarterly"]}, "[vega_hedge] expiries"),
    ],
)
def test_bad_vega_hedge_keys_name_the_key(keys, message):
    with pytest.raises(InputError, match=re.escape(message)):
        build_strategy({"vega_hedge": keys})


def test_vega_hedging_is_off_by_default():
    strategy = build_strategy({})
    assert strategy.vega_hedge.policy == "none" and strategy.pricing.max_vega == 0.0
    assert math.isclose(strategy.vega_hedge.spread_vol, 0.005)
