"""Price-elastic traders (docs/design.md): the acceptance probability of a row against its closed
form, computed here by hand; fill ratios that fall with the fee; informed rows that never
decline; declined rows that move nothing; and elasticity 0 as the engine without the rule."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
from scenarios import flow_frame, hourly_flow, hourly_market, market_frame, random_scenario

from backtest.inputs.flow import acceptance_draws
from backtest.pricing import greeks, price
from backtest.runner import simulate_frames

HOURS_PER_YEAR = 365 * 24
SPOT, IV, FEE, SPOT_FEE = 2000.0, 0.6, 0.01, 0.0005


def elastic(elasticity: float, spread: float = 0.01, **sections: dict) -> dict:
    """A quiet pool (no hedging, no impact, no vega fee) with price-elastic traders."""
    strategy = {
        "flow": {"elasticity": elasticity, "reference_spread_vol": spread},
        "pricing": {"base_fee": FEE, "spot_fee": SPOT_FEE},
        "hedge": {"policy": "none"},
    }
    for name, keys in sections.items():
        strategy[name] = strategy.get(name, {}) | keys
    return strategy


def test_acceptance_of_one_row_is_the_closed_form():
    """A buyer of a call and a seller of a put: reference R = BS at iv ± spread, quote = mark ±
    fee per contract, x = excess / (0.01 vega), p = 2 / (1 + exp(elasticity x)); the row fills
    exactly when its draw u is below p."""
    beta, spread, size = 0.7, 0.01, 10.0
    market = hourly_market([SPOT] * 3, IV)
    flow = hourly_flow((0, 48, 2000, "C", 1, size), (0, 48, 1900, "P", -1, size))
    tables, _ = simulate_frames(elastic(beta, spread), market, flow)
    trades = tables.trades.sort("flow_row")
    tau = 48 / HOURS_PER_YEAR
    draws = acceptance_draws(7, 0, np.arange(2))  # the default [flow] seed, path 0
    for row, (kind, strike, side) in enumerate([("C", 2000.0, 1), ("P", 1900.0, -1)]):
        mark = float(price(kind, SPOT, strike, tau, IV))
        vega = float(greeks(kind, SPOT, strike, tau, IV).vega)
        reference = float(price(kind, SPOT, strike, tau, IV + side * spread))
        fee = FEE * mark + SPOT_FEE * SPOT  # per contract
        excess = side * (mark - reference) + fee
        x = excess / (0.01 * vega)
        p = min(1.0, 2.0 / (1.0 + math.exp(beta * x)))
        assert x > 0 and 0.0 < p < 1.0  # the rule bites: the pool is dearer than the venue
        got = trades.row(row, named=True)
        assert math.isclose(got["reference"], reference, rel_tol=1e-12)
        assert math.isclose(got["p_accept"], p, rel_tol=1e-10)
        taken = draws[row] < p
        assert got["filled"] == (size if taken else 0.0)
        assert got["reject_reason"] == ("" if taken else "price")
        assert math.isclose(got["fee"] + got["fee_forgone"], fee * size, rel_tol=1e-12)


def test_a_price_at_the_reference_is_always_taken():
    """No fees and the venue's spread: the pool is cheaper than the venue, p = 1 exactly."""
    market = hourly_market([SPOT] * 3, IV)
    flow = hourly_flow(*[(0, 48, 2000, "C", s, 5) for s in (1, -1, 1, -1)])
    free = {"base_fee": 0.0, "spot_fee": 0.0}
    tables, _ = simulate_frames(elastic(50.0, pricing=free), market, flow)
    assert (tables.trades["p_accept"] == 1.0).all()
    assert (tables.trades["reject_reason"] == "").all()


def test_fill_ratio_falls_with_the_fee_at_the_same_seed():
    market = market_frame(96, seed=3)
    flow = flow_frame(market, n_trades=200, seed=3)
    ratios = []
    for fee in (0.0, 0.005, 0.01, 0.02, 0.05):
        _, summary = simulate_frames(elastic(1.0, pricing={"base_fee": fee}), market, flow)
        ratios.append(float(summary["fill_ratio"][0]))
    assert all(a >= b for a, b in zip(ratios, ratios[1:], strict=False)), ratios
    assert ratios[0] > ratios[-1] + 0.1, ratios


def test_informed_traders_keep_their_own_rule():
    market = market_frame(48, seed=4)
    flow = flow_frame(market, n_trades=40, seed=4)
    steep = elastic(50.0, pricing={"base_fee": 0.2})
    informed, _ = simulate_frames(steep, market, flow.with_columns(informed=pl.lit(True)))
    noise, _ = simulate_frames(steep, market, flow.with_columns(informed=pl.lit(False)))
    assert (informed.trades["reject_reason"] != "price").all()
    assert informed.trades["p_accept"].is_null().all()
    assert (noise.trades["reject_reason"] == "price").sum() > 30


def test_declined_rows_move_nothing_and_are_counted_as_lost():
    """Every row declined: the pool's ticks are those of a pool with no flow at all, and the
    summary counts what went to the reference venue."""
    market = market_frame(48, seed=5)
    flow = flow_frame(market, n_trades=25, seed=5)
    declined, summary = simulate_frames(elastic(1e6, pricing={"base_fee": 0.05}), market, flow)
    empty, _ = simulate_frames(elastic(1e6, pricing={"base_fee": 0.05}), market, flow.head(0))
    trades = declined.trades
    assert (trades["reject_reason"] == "price").all() and (trades["filled"] == 0).all()
    assert (trades["premium"] == 0).all() and (trades["fee"] == 0).all()
    assert declined.steps.equals(empty.steps)
    assert summary["n_rejected_price"][0] == trades.height
    assert math.isclose(
        summary["notional_lost_to_reference"][0], float((trades["size"] * trades["spot"]).sum())
    )
    assert math.isclose(summary["fees_forgone"][0], float(trades["fee_forgone"].sum()))
    assert (trades["fee_forgone"] > 0).all()


def test_elasticity_zero_is_the_engine_without_the_rule():
    """The keys at 0 (whatever the spread) give the tables of a strategy without them."""
    sc = random_scenario(11)
    strategy = {name: keys for name, keys in sc.strategy.items() if name != "flow"}
    without, without_summary = simulate_frames(strategy, sc.market, sc.flow, lp_flows=sc.lp)
    off = strategy | {"flow": {"elasticity": 0.0, "reference_spread_vol": 0.05}}
    with_keys, with_summary = simulate_frames(off, sc.market, sc.flow, lp_flows=sc.lp)
    for name in ("steps", "trades", "hedges", "series", "liquidations", "lp"):
        assert getattr(without, name).equals(getattr(with_keys, name)), name
    assert without_summary.equals(with_summary)
    assert without.trades["reference"].is_null().all()
    assert (without.trades["reject_reason"] != "price").all()


def test_draws_follow_the_row_not_the_window():
    """A row's draw is number flow_row of its path's stream: the same however many rows the
    window keeps, and different on another path."""
    rows = np.arange(50)
    assert np.array_equal(acceptance_draws(7, 0, rows[:10]), acceptance_draws(7, 0, rows)[:10])
    assert not np.array_equal(acceptance_draws(7, 0, rows), acceptance_draws(7, 1, rows))
    assert not np.array_equal(acceptance_draws(7, 0, rows), acceptance_draws(8, 0, rows))


def test_a_flow_folder_numbers_its_rows_across_files(tmp_path):
    """Two files of a folder: the second file's rows follow the first's, so no two rows share a
    number (or a draw against the reference venue)."""
    from backtest.inputs.flow import load_flow, public_flow

    first = hourly_flow((0, 48, 2000, "C", 1, 1.0), (1, 48, 2000, "C", 1, 1.0))
    second = hourly_flow((0, 48, 1900, "P", -1, 1.0), (2, 48, 1900, "P", -1, 1.0))
    folder = tmp_path / "flow"
    folder.mkdir()
    first.write_parquet(folder / "a.parquet")
    second.write_parquet(folder / "b.parquet")
    flow = load_flow(folder)
    assert sorted(flow["flow_row"].to_list()) == [0, 1, 2, 3]
    assert flow.filter(pl.col("strike") == 1900)["flow_row"].sort().to_list() == [2, 3]
    assert public_flow(flow).height == 4
