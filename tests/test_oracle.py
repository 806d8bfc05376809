"""The oracle (docs/design.md, "Oracle"): its prints against a hand-worked series, no look-ahead
beyond its own lag, one stale-quote trade's PnL by hand, the delta the pool hedges measured at
the oracle's price, and bad keys."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scenarios import assert_reconciles, hourly_flow, hourly_market, no_fees

from backtest.config import build_strategy
from backtest.errors import InputError
from backtest.kernel.oracle import push_oracle
from backtest.pricing import greeks, price
from backtest.runner import simulate_frames

HOUR = 3_600_000_000_000
HOURS_PER_YEAR = 365 * 24
IV = 0.6


def oracle(spot, lag_h=0.0, deviation=0.005, heartbeat_h=3.0, hours=None):
    hours = np.arange(len(spot)) if hours is None else np.asarray(hours)
    ts = (hours * HOUR).astype(np.int64)
    offsets = np.array([0, len(spot)], np.int64)
    return push_oracle(
        ts,
        np.asarray(spot, float),
        offsets,
        np.int64(lag_h * HOUR),
        deviation,
        np.int64(heartbeat_h * HOUR),
    )


def test_prints_on_deviation_and_heartbeat():
    spot = [100.0, 100.3, 101.0, 101.2, 99.0, 99.1, 99.2, 99.25]
    # 0.3 % and 0.2 % moves stay under 0.5 %; 101 and 99 print; 3 h after the 99 print the
    # heartbeat prints 99.25 although it moved only 0.25 %.
    assert oracle(spot).tolist() == [100.0, 100.0, 101.0, 101.0, 99.0, 99.0, 99.0, 99.25]


def test_a_lagged_feed_prints_the_market_of_lag_hours_ago():
    spot = [100.0, 102.0, 104.0, 103.9, 90.0]
    # lag 1 h: the source at t is the spot of t - 1 (the first tick's before that)
    assert oracle(spot, lag_h=1.0, deviation=0.0, heartbeat_h=0.0).tolist() == [
        100.0,
        100.0,
        102.0,
        104.0,
        103.9,
    ]


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.floats(50.0, 150.0), min_size=4, max_size=40),
    st.integers(0, 3),
    st.floats(0.0, 0.05),
    st.floats(0.0, 5.0),
    st.data(),
)
def test_no_look_ahead_beyond_the_lag(spot, lag, deviation, heartbeat, data):
    """Moving the market after tick k changes no print up to tick k + lag."""
    k = data.draw(st.integers(0, len(spot) - 1))
    before = oracle(spot, lag, deviation, heartbeat)
    moved = np.asarray(spot) * np.r_[np.ones(k + 1), np.full(len(spot) - k - 1, 1.7)]
    after = oracle(moved, lag, deviation, heartbeat)
    np.testing.assert_array_equal(before[: k + lag + 1], after[: k + lag + 1])


def stale_pool(**sections: dict) -> dict:
    strategy = no_fees(
        hedge={"policy": "none"},
        oracle={"model": "push", "lag": 1.0, "deviation": 0.0, "heartbeat": 0.0},
        flow={"stale_fraction": 1.0, "stale_edge": 0.01},
    )
    for name, keys in sections.items():
        strategy[name] = strategy.get(name, {}) | keys
    return strategy


def test_one_stale_quote_trade_by_hand():
    """Spot jumps 2000 -> 2100 at hour 1; the oracle, an hour behind, still says 2000. A
    stale-quote trader (every row is one here) buys the 2100 call the oracle underprices: he
    pays Black-Scholes at 2000 plus fees, the option is worth Black-Scholes at 2100, and the
    difference is his and the pool's pnl_oracle. At hour 0 oracle and market agree: no edge."""
    market = hourly_market([2000.0, 2100.0, 2100.0], IV)
    flow = hourly_flow((0, 48, 2100, "C", -1, 10.0), (1, 48, 2100, "C", -1, 10.0))
    base_fee = 0.01
    tables, summary = simulate_frames(stale_pool(pricing={"base_fee": base_fee}), market, flow)
    trades = tables.trades.sort("flow_row")
    assert trades["reject_reason"][0] == "no_edge" and trades["filled"][0] == 0.0
    row = trades.row(1, named=True)
    tau = 47 / HOURS_PER_YEAR
    at_oracle = float(price("C", 2000.0, 2100.0, tau, IV))
    at_market = float(price("C", 2100.0, 2100.0, tau, IV))
    assert row["side"] == 1 and row["filled"] == 10.0  # he buys, whatever the row said
    assert row["oracle"] == 2000.0 and row["stale"]
    assert row["mark"] == pytest.approx(at_oracle, rel=1e-12)
    fee = base_fee * at_oracle * 10.0
    assert row["fee"] == pytest.approx(fee, rel=1e-12)
    assert row["premium"] == pytest.approx(10.0 * at_oracle + fee, rel=1e-12)
    gap = 10.0 * (at_market - at_oracle)
    assert row["oracle_gap"] == pytest.approx(gap, rel=1e-12)
    assert float(tables.steps["pnl_oracle"][1]) == pytest.approx(-gap, rel=1e-12)
    assert summary["oracle_arb_pnl"][0] == pytest.approx(gap - fee, rel=1e-12)
    assert summary["n_stale_trades"][0] == 1 and summary["n_rejected_no_edge"][0] == 1
    assert tables.steps["oracle"].to_list() == [2000.0, 2000.0, 2100.0]
    assert_reconciles(tables, summary)


@pytest.mark.parametrize("collateral", ["full", "dynamic"])
def test_the_fill_check_counts_what_a_stale_quote_costs_at_market_prices(collateral):
    """Spot jumps 2000 -> 2600 at hour 1; the oracle still says 2000. A trader buys 2600 calls
    the pool quotes at 2000: each costs the pool the gap to its market value. Before, the fill
    was sized against NAV before that loss, so the pool ended above its 80 % cap (a never-
    printing oracle took one to 94.9 %); now the cap holds on the NAV the fill leaves."""
    pool = {"collateral": collateral, "max_utilisation": 0.8, "initial_capital": 1_000_000.0}
    if collateral == "dynamic":
        pool |= {"liquidation_threshold": 1.0}
    strategy = stale_pool(pool=pool, flow={"stale_fraction": 0.0})
    market = hourly_market([2000.0, 2600.0, 2600.0], IV)
    flow = hourly_flow((1, 48, 2600, "C", 1, 5_000.0))
    tables, summary = simulate_frames(strategy, market, flow)
    row = tables.trades.row(0, named=True)
    assert 0.0 < row["filled"] < 5_000.0 and row["reject_reason"] == "utilisation"
    assert row["oracle_gap"] > 0.0  # the pool lost the gap
    assert tables.steps["utilisation"][1] == pytest.approx(0.8, rel=1e-6)
    assert tables.steps["utilisation"][1] <= 0.8 * (1 + 1e-9)
    assert_reconciles(tables, summary)


def test_the_pool_hedges_the_delta_it_measures_at_the_oracle():
    """Short 10 calls at hour 0; at hour 1 spot jumps to 2100 and the oracle still says 2000.
    Hedging every trade, the pool buys -(delta + gamma (oracle - spot)) of the book, not the
    delta at the market: it hedges the price it sees."""
    market = hourly_market([2000.0, 2100.0, 2100.0], IV)
    flow = hourly_flow((0, 48, 2000, "C", 1, 10.0), (1, 48, 2000, "C", 1, 1e-6))
    strategy = stale_pool(hedge={"policy": "every_trade"}, flow={"stale_fraction": 0.0})
    tables, _ = simulate_frames(strategy, market, flow)
    tau = 47 / HOURS_PER_YEAR
    g = greeks("C", 2100.0, 2000.0, tau, IV)
    book_delta = -(10.0 + 1e-6) * float(g.delta)
    book_gamma = -(10.0 + 1e-6) * float(g.gamma)
    held = float(tables.hedges["qty"][0])
    expected = -(book_delta + book_gamma * (2000.0 - 2100.0)) - held
    assert float(tables.hedges["qty"][1]) == pytest.approx(expected, rel=1e-9)


def test_without_an_oracle_nothing_is_quoted_off_the_market():
    market = hourly_market([2000.0, 2100.0, 2100.0], IV)
    flow = hourly_flow((1, 48, 2100, "C", 1, 10.0))
    tables, summary = simulate_frames(no_fees(hedge={"policy": "none"}), market, flow)
    assert tables.trades["oracle"].is_null().all() and (tables.trades["oracle_gap"] == 0).all()
    assert (tables.steps["oracle"] == tables.steps["spot"]).all()
    assert (tables.steps["pnl_oracle"] == 0).all() and summary["oracle_arb_pnl"][0] == 0.0


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"flow": {"stale_fraction": 0.1}}, "[flow] stale_fraction: stale-quote traders"),
        ({"oracle": {"model": "chainlink"}}, "[oracle] model"),
        ({"oracle": {"lag": -1.0}}, "[oracle] lag"),
        ({"oracle": {"deviation": -0.01}}, "[oracle] deviation"),
        ({"flow": {"stale_fraction": 1.5}}, "[flow] stale_fraction"),
    ],
)
def test_bad_oracle_keys_name_the_key(raw, message):
    with pytest.raises(InputError, match=re.escape(message)):
        build_strategy(raw)


def test_the_oracle_is_off_by_default():
    strategy = build_strategy({})
    assert strategy.oracle.model == "none" and strategy.flow.stale_fraction == 0.0
    assert math.isclose(strategy.flow.stale_edge, 0.002)


def test_every_seeded_use_has_a_stream_of_its_own():
    """The stale-quote traders once shared a stream with the lending market's utilisation."""
    from backtest.inputs import streams

    keys = [v for k, v in vars(streams).items() if k.isupper()]
    assert len(keys) == len(set(keys)) == 4
