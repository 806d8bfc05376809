"""Yield-chasing LPs (docs/design.md): a deposit at the first daily decision whose full trailing
window of recorded NAV per share beats the benchmark and not before, computed here by hand from
the steps table; amounts against the closed form; requests when the pool lags; stayers' NAV per
share unchanged by a yield deposit; elasticities 0 as the engine without the rule."""

from __future__ import annotations

import math

import polars as pl
from scenarios import assert_reconciles, hourly_flow, hourly_market, random_scenario

from backtest.runner import simulate_frames

DAY_US = 86_400 * 1_000_000
YEAR_DAYS = 365


def run(idle_yield: float, days: int = 8, **lp):
    """A flat market and no flow: NAV per share grows at idle_yield and nothing else moves it."""
    strategy = {
        "pool": {"idle_yield": idle_yield},
        "hedge": {"policy": "none"},
        "lp": {"benchmark_apy": 0.05, "yield_window_days": 2.5} | lp,
    }
    return simulate_frames(strategy, hourly_market([2000.0] * (24 * days)), hourly_flow())


def decisions(steps: pl.DataFrame, window_days: float) -> list[tuple[int, float, float]]:
    """By hand: at each tick opening a UTC day with a full window, (tick, APY from the last tick
    at or before now - window to the tick before now, NAV before this tick's LP flow)."""
    ts = steps["ts"].dt.epoch("us").to_list()
    nps, nav, flow = (steps[c].to_list() for c in ("nav_per_share", "nav", "lp_flow"))
    out = []
    for t in range(1, len(ts)):
        start = ts[t] - window_days * DAY_US
        if ts[t] // DAY_US == ts[t - 1] // DAY_US or ts[0] > start:
            continue
        j = max(k for k in range(t) if ts[k] <= start)
        apy = (nps[t - 1] / nps[j]) ** (365 * DAY_US / (ts[t - 1] - ts[j])) - 1.0
        out.append((t, apy, nav[t] - flow[t]))
    return out


def test_deposits_arrive_once_the_trailing_apy_beats_the_benchmark_and_not_before():
    tables, summary = run(0.2, deposit_elasticity=2.0)
    steps, lp = tables.steps, tables.lp
    assert_reconciles(tables, summary)
    expected = [d for d in decisions(steps, 2.5) if d[1] > 0.05]
    assert expected and expected[0][0] == 72  # day 3: the first day with 2.5 days behind it
    ticks = steps["ts"].to_list()
    assert lp["ts"].to_list() == [ticks[t] for t, _, _ in expected]
    assert lp["yield_driven"].all() and (lp["event"] == "deposit").all()
    for (t, apy, nav), amount in zip(expected, lp["amount"], strict=True):
        assert 0.15 < apy < 0.3
        assert math.isclose(amount, 2.0 * (apy - 0.05) / YEAR_DAYS * nav, rel_tol=1e-9)
        # Shares at NAV per share: the deposit leaves the stayers' NAV per share where it was.
        before = (steps["nav"][t] - steps["lp_flow"][t]) / steps["shares"][t - 1]
        assert math.isclose(steps["nav_per_share"][t], before, rel_tol=1e-12)


def test_a_pool_that_lags_the_benchmark_sees_requests_and_no_deposits():
    tables, summary = run(0.0, withdrawal_elasticity=3.0, deposit_elasticity=1.0)
    steps, lp = tables.steps, tables.lp
    assert_reconciles(tables, summary)
    requests = lp.filter(pl.col("event") == "request")
    expected = decisions(steps, 2.5)
    assert len(expected) == requests.height == 5
    assert (lp.filter(pl.col("event") == "deposit").height) == 0
    assert requests["yield_driven"].all()
    paid = lp.filter(pl.col("event") == "withdrawal")
    assert paid.height == requests.height and not paid["yield_driven"].any()
    for (t, apy, nav), amount in zip(expected, requests["amount"], strict=True):
        assert apy == 0.0
        assert math.isclose(-amount, 3.0 * 0.05 / YEAR_DAYS * nav, rel_tol=1e-9)
        assert steps["ts"][t] in requests["ts"].to_list()


def test_elasticities_zero_is_the_engine_without_the_rule():
    sc = random_scenario(5)
    off = {"benchmark_apy": 0.5, "yield_window_days": 1.0}
    base, _ = simulate_frames(sc.strategy, sc.market, sc.flow, lp_flows=sc.lp)
    strategy = sc.strategy | {"lp": sc.strategy["lp"] | off}
    tables, _ = simulate_frames(strategy, sc.market, sc.flow, lp_flows=sc.lp)
    for name in ("steps", "trades", "hedges", "lp", "liquidations", "series"):
        assert getattr(tables, name).equals(getattr(base, name)), name
