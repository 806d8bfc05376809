"""[mev] random_delay (docs/design.md, "Sandwich attacks"): each hedge fills a seeded 0..N ticks
after it was decided, so an attacker cannot count on it following the trade that caused it."""

from __future__ import annotations

import numpy as np
from scenarios import T0, assert_reconciles, hourly_flow, hourly_market, no_fees

from backtest.inputs.streams import HEDGE_DELAY
from backtest.runner import simulate_frames

SEED = 7  # the default [flow] seed


def delays(n: int, most: int, path_id: int = 0) -> np.ndarray:
    """The delays drawn by hand: uniform in 0..most, the (seed, path) stream HEDGE_DELAY."""
    seq = np.random.SeedSequence([SEED, path_id], spawn_key=(HEDGE_DELAY,))
    return np.random.default_rng(seq).integers(0, most + 1, n)


def every_trade(**sections: dict) -> dict:
    strategy = no_fees(hedge={"policy": "every_trade"})
    for name, keys in sections.items():
        strategy[name] = strategy.get(name, {}) | keys
    return strategy


def test_each_hedge_fills_its_drawn_delay_after_the_trade():
    """Trades at hours 0, 6, 12 and 18, hedged after every trade: each hedge fills d ticks later,
    d the draw of the trade's tick."""
    spots = 2000.0 * np.exp(np.linspace(0.0, 0.05, 30))
    rows = [(h, 24 * 10, 2000, "C", 1, 10.0) for h in (0, 6, 12, 18)]
    tables, summary = simulate_frames(
        every_trade(mev={"random_delay": 3}), hourly_market(spots, 0.6), hourly_flow(*rows)
    )
    drawn = delays(30, 3)
    hours = [(ts - T0).total_seconds() / 3600 for ts in tables.hedges["ts"]]
    assert hours == [h + drawn[h] for h in (0, 6, 12, 18)]
    assert_reconciles(tables, summary)


def test_random_delay_zero_is_the_engine_without_it():
    market = hourly_market(2000.0 * np.exp(np.linspace(0.0, 0.05, 12)), 0.6)
    flow = hourly_flow(*[(h, 24 * 10, 2000, "C", 1, 10.0) for h in range(0, 12, 2)])
    plain, _ = simulate_frames(every_trade(), market, flow)
    zero, _ = simulate_frames(every_trade(mev={"random_delay": 0}), market, flow)
    assert plain.steps.equals(zero.steps) and plain.hedges.equals(zero.hedges)


def test_a_delayed_hedge_is_sandwiched_only_when_it_lands_behind_another_trade():
    """A public AMM hedge that follows a trade is sandwiched; delayed into a tick without flow,
    it is not visible and fills clean."""
    spots = 2000.0 * np.exp(np.linspace(0.0, 0.04, 60))
    rows = [(h, 24 * 10, 2000, "C", 1, 200.0) for h in range(0, 60, 5)]
    sandwich = {
        "slippage": {"model": "cpmm", "liquidity_usd": 5e7, "fee_bps": 5.0, "mev_bps": 0.0},
        "mev": {"model": "sandwich", "max_slippage": 0.01, "attacker_cost_usd": 10.0},
    }
    market, flow = hourly_market(spots, 0.6), hourly_flow(*rows)
    now, _ = simulate_frames(every_trade(**sandwich), market, flow)
    later, summary = simulate_frames(
        every_trade(**(sandwich | {"mev": sandwich["mev"] | {"random_delay": 3}})), market, flow
    )
    assert now.hedges["sandwiched"].all()
    traded = set(flow["ts"].to_list())
    for row in later.hedges.iter_rows(named=True):
        assert row["sandwiched"] == (row["ts"] in traded)
    assert later.hedges["sandwiched"].sum() < now.hedges["sandwiched"].sum()
    assert_reconciles(later, summary)
