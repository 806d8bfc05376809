"""Flow sized to the pool (docs/design.md): every offered size follows notional_per_nav x NAV
over the nominal daily notional; capital that doubles doubles the flow, NAV that halves halves
it; the expected daily notional against its closed form; notional_per_nav 0 is the engine
without the rule."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
from scenarios import hourly_lp, hourly_market, market_frame, random_scenario

from backtest.runner import simulate_frames

SPOT, IV = 2000.0, 0.6


def sized(notional_per_nav: float, capital: float = 1e6, **sections: dict) -> dict:
    """The default strategy on synthetic flow, sized to the pool."""
    strategy = {
        "flow": {"notional_per_nav": notional_per_nav},
        "pool": {"initial_capital": capital},
    }
    for name, keys in sections.items():
        strategy[name] = strategy.get(name, {}) | keys
    return strategy


def test_doubling_the_capital_doubles_every_offered_size():
    """Same seed, twice the capital: the first tick's rows exactly twice, later rows follow NAV,
    which doubles too (the default pool is homogeneous in its size)."""
    market = market_frame(96, seed=3)
    small, _ = simulate_frames(sized(0.5, 1e6), market)
    large, _ = simulate_frames(sized(0.5, 2e6), market)
    a, b = small.trades.sort("flow_row"), large.trades.sort("flow_row")
    assert a.height > 100 and a["flow_row"].equals(b["flow_row"])
    first = a["ts"] < market["ts"][1]
    assert first.any()
    assert (b.filter(first)["size"] == 2.0 * a.filter(first)["size"]).all()
    np.testing.assert_allclose(b["size"].to_numpy(), 2.0 * a["size"].to_numpy(), rtol=1e-9)
    np.testing.assert_allclose(
        large.steps["nav"].to_numpy(), 2.0 * small.steps["nav"].to_numpy(), rtol=1e-9
    )


def test_expected_daily_notional_is_the_closed_form_on_a_flat_market():
    """200 flat days, no fees, no hedging: each row's size x spot over the NAV it was offered at
    sums to notional_per_nav a day; the nominal volume trades_per_day x size_median
    exp(size_sigma^2 / 2) is what that share is measured against."""
    days, share, per_day, median, sigma = 200, 0.3, 40.0, 5.0, 0.5
    market = hourly_market([SPOT] * (days * 24), IV)
    strategy = sized(
        share,
        flow={"trades_per_day": per_day, "size_median": median, "size_sigma": sigma},
        pricing={"base_fee": 0.0, "spot_fee": 0.0},
        hedge={"policy": "none"},
    )
    tables, _ = simulate_frames(strategy, market)
    nav_before = tables.steps.select(
        pl.col("ts"), nav_before=pl.col("nav").shift(1, fill_value=1e6)
    )
    rows = tables.trades.join(nav_before, on="ts")
    assert rows.height == tables.trades.height
    shares = (rows["size"] * rows["spot"] / rows["nav_before"]).to_numpy()
    # Poisson count and lognormal size: the daily mean's relative sd is about 1.3 %
    assert math.isclose(shares.sum() / days, share, rel_tol=0.05), shares.sum() / days
    # per row, against the formula with the previous tick's NAV (a flat hour moves NAV by theta)
    nominal = per_day * median * math.exp(sigma**2 / 2) * SPOT
    raw = rows["size"].to_numpy() / (share * rows["nav_before"].to_numpy() / nominal)
    assert raw.min() > 0 and math.isclose(float(np.median(raw)), median, rel_tol=0.05)


def test_a_pool_whose_nav_halves_is_offered_half():
    """Half the capital withdrawn at hour 24: rows before it are offered as before, rows after
    it half (to the little PnL the two pools make apart)."""
    market = hourly_market([SPOT] * 72, IV)
    strategy = sized(0.05, hedge={"policy": "none"})
    whole, _ = simulate_frames(strategy, market)
    halved, _ = simulate_frames(strategy, market, lp_flows=hourly_lp((24, -5e5)))
    a, b = whole.trades.sort("flow_row"), halved.trades.sort("flow_row")
    assert b.height == a.height
    hour = (a["ts"] - market["ts"][0]).dt.total_hours().to_numpy()
    ratio = b["size"].to_numpy() / a["size"].to_numpy()
    assert (ratio[hour <= 24] == 1.0).all()
    assert (hour > 24).sum() > 20
    np.testing.assert_allclose(ratio[hour > 24], 0.5, rtol=0.01)


def test_notional_per_nav_zero_is_the_engine_without_the_key():
    sc = random_scenario(5)
    strategy = {name: dict(keys) for name, keys in sc.strategy.items()}
    strategy["flow"].pop("notional_per_nav", None)
    without, without_summary = simulate_frames(strategy, sc.market, sc.flow, lp_flows=sc.lp)
    strategy["flow"]["notional_per_nav"] = 0.0
    off, off_summary = simulate_frames(strategy, sc.market, sc.flow, lp_flows=sc.lp)
    for name in ("steps", "trades", "hedges", "series", "liquidations", "lp"):
        assert getattr(without, name).equals(getattr(off, name))
    assert without_summary.equals(off_summary)
