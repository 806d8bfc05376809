"""Ledger properties on random small scenarios: reconciliation, conservation, causality,
determinism, no PnL from nothing, and full collateral that never over-commits."""

from __future__ import annotations

import numpy as np
import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scenarios import flow_frame, market_frame, no_fees

from backtest.kernel.types import PNL_COMPONENTS
from backtest.pricing import price
from backtest.runner import simulate_frames

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

engine_choices = st.fixed_dictionaries(
    {
        "pool": st.fixed_dictionaries(
            {
                "initial_capital": st.sampled_from([2e5, 1e6, 5e6]),
                "collateral": st.sampled_from(["full", "dynamic"]),
                "max_utilisation": st.sampled_from([0.3, 0.8, 2.0]),
                "idle_yield": st.sampled_from([0.0, 0.05]),
                "liquidation_threshold": st.sampled_from([0.5, 1.0]),
                "liquidation_penalty": st.sampled_from([0.0, 0.05]),
            }
        ),
        "pricing": st.fixed_dictionaries(
            {
                "base_fee": st.sampled_from([0.0, 0.01, 0.05]),
                "spot_fee": st.sampled_from([0.0, 0.0005]),
                "vega_fee": st.sampled_from([0.0, 0.5]),
                "min_fee": st.sampled_from([0.0, 1.0]),
                "skew_slope": st.sampled_from([0.0, -0.3]),
                "smile_curvature": st.sampled_from([0.0, 0.5]),
                "rate": st.sampled_from([0.0, 0.04]),
                "iv_impact": st.sampled_from([0.0, 0.02]),
                "skew_impact": st.sampled_from([0.0, 0.01]),
                "standard_size": st.sampled_from([5.0, 50.0]),
                "impact_half_life": st.sampled_from([1.0, 24.0]),
                "cb_iv_move": st.sampled_from([0.0, 0.05]),
                "cb_min_free": st.sampled_from([0.0, 0.3]),
                "cb_hours": st.sampled_from([0.0, 3.0]),
            }
        ),
        "hedge": st.fixed_dictionaries(
            {
                "policy": st.sampled_from(
                    ["none", "every_trade", "threshold", "periodic", "whalley_wilmott"]
                ),
                "threshold": st.sampled_from([0.0, 0.01, 0.05]),
                "interval": st.sampled_from(["1h", "4h"]),
                "rebalance_to": st.sampled_from(["zero", "edge"]),
                "instrument": st.sampled_from(["spot", "perp"]),
                "latency": st.sampled_from([0, 0, 2]),
                "hedge_cap": st.sampled_from([float("inf"), 50.0]),
            }
        ),
        "lp": st.fixed_dictionaries(
            {
                "run_drawdown": st.sampled_from([0.0, 0.002]),
                "run_fraction": st.sampled_from([0.1, 0.5]),
                "withdrawal_delay": st.sampled_from([0.0, 2.0]),
                "withdrawal_fee": st.sampled_from([0.0, 0.01]),
            }
        ),
        "slippage": st.fixed_dictionaries(
            {
                "model": st.sampled_from(["none", "fixed_bps", "sqrt_impact", "cpmm"]),
                "liquidity_usd": st.sampled_from([2e5, 5e7]),
                "gas_usd": st.sampled_from([0.0, 5.0]),
                "mev_bps": st.sampled_from([0.0, 3.0]),
                "mev_min_notional": st.sampled_from([0.0, 1e5]),
            }
        ),
    }
)
scenario = st.tuples(
    st.integers(0, 10_000),  # market seed
    st.integers(0, 10_000),  # flow seed
    st.integers(5, 60),  # ticks
    st.booleans(),  # uneven spacing
    st.integers(0, 40),  # trades
)


def lp_frame(market, seed):
    """A few deposits and withdrawal requests at random times inside the market's span."""
    rng = np.random.default_rng(seed)
    first, last = market["ts"][0], market["ts"][-1]
    n = int(rng.integers(0, 4))
    times = sorted(first + (last - first) * float(u) for u in rng.uniform(0, 1, n))
    amounts = [float(a) for a in rng.choice([-300_000.0, -50_000.0, 100_000.0], n)]
    return pl.DataFrame(
        {"ts": times, "amount": amounts},
        schema={"ts": pl.Datetime("us", "UTC"), "amount": pl.Float64},
    )


def run_scenario(strategy, seeds, funding=0.1, expire_inside=False, lp=True):
    market_seed, flow_seed, n_ticks, uneven, n_trades = seeds
    market = market_frame(n_ticks, seed=market_seed, uneven=uneven, funding=funding)
    flow = flow_frame(market, n_trades, seed=flow_seed, expire_inside=expire_inside)
    lp_flows = lp_frame(market, flow_seed) if lp else None
    tables, summary = simulate_frames(strategy, market, flow, lp_flows=lp_flows)
    return market, flow, tables, summary


@SETTINGS
@given(engine_choices, scenario)
def test_attribution_reconciles_every_tick(strategy, seeds):
    _, _, tables, summary = run_scenario(strategy, seeds)
    steps = tables.steps
    components = steps.select(pl.sum_horizontal(PNL_COMPONENTS)).to_series().to_numpy()
    total = steps["pnl_total"].to_numpy()
    nav = steps["nav"].to_numpy()
    scale = max(1.0, float(np.abs(nav).max()))
    assert np.allclose(components, total, rtol=0, atol=1e-9 * scale)
    d_nav = np.diff(nav, prepend=strategy["pool"]["initial_capital"])
    assert np.allclose(d_nav, total + steps["lp_flow"].to_numpy(), rtol=0, atol=1e-9 * scale)
    assert summary["reconcile_max_abs"][0] <= 1e-9 * scale
    assert (steps["pnl_hedge_cost"] <= 0).all()


@SETTINGS
@given(engine_choices, scenario)
def test_money_is_conserved(strategy, seeds):
    """Final NAV rebuilt from what traders paid, what expiries paid out, what hedges cost and
    what cash earned, with no knowledge of the engine's ledger."""
    # Full collateral and no LP flows: no forced buybacks, so positions follow from trades alone.
    strategy["pool"]["collateral"] = "full"
    strategy["lp"]["run_drawdown"] = 0.0
    market, _, tables, _ = run_scenario(strategy, seeds, expire_inside=True, lp=False)
    steps, trades, hedges = tables.steps, tables.trades, tables.hedges
    spot = market["spot"].to_numpy()
    ts = market["ts"]

    payouts = 0.0
    filled = trades.filter(pl.col("filled") > 0)
    for (expiry, strike, kind), rows in filled.group_by(["expiry", "strike", "kind"]):
        position = float((-rows["side"].cast(pl.Float64) * rows["filled"]).sum())
        settle = int(
            np.searchsorted(ts.to_numpy(), np.datetime64(expiry.replace(tzinfo=None)), "left")
        )
        payouts += position * float(price(kind, spot[settle], strike, 0.0, 0.5))

    hedge_costs = float((hedges["slippage_cost"] + hedges["gas_cost"] + hedges["mev_cost"]).sum())
    units = steps["hedge_units"].to_numpy()
    if strategy["hedge"]["instrument"] == "spot":
        hedge_pnl = float(units[-1] * spot[-1] - (hedges["qty"] * hedges["spot"]).sum())
    else:
        hedge_pnl = float((units[:-1] * np.diff(spot)).sum())
    expected = (
        strategy["pool"]["initial_capital"]
        + float(filled["premium"].sum())
        + payouts
        + hedge_pnl
        - hedge_costs
        + float(steps["pnl_interest"].sum())
        + float(steps["pnl_funding"].sum())
    )
    nav = steps["nav"].to_numpy()
    assert steps["n_live_series"][-1] == 0
    assert abs(nav[-1] - expected) <= 1e-8 * max(abs(nav).max(), 1.0)
    assert abs(hedge_costs + float(steps["pnl_hedge_cost"].sum())) <= 1e-8 * max(hedge_costs, 1.0)


@SETTINGS
@given(engine_choices, scenario, st.floats(0.2, 0.8))
def test_no_look_ahead(strategy, seeds, cut_fraction):
    """Changing the market after tick k and the flow after ts[k+1] changes no row up to k."""
    market, flow, tables, _ = run_scenario(strategy, seeds)
    k = int(cut_fraction * (market.height - 1))
    cut_ts = market["ts"][k + 1]
    later = pl.arange(0, market.height) > k
    changed = market.with_columns(
        spot=pl.when(later).then(pl.col("spot") * 1.3).otherwise(pl.col("spot")),
        iv=pl.when(later).then(pl.col("iv") * 0.5).otherwise(pl.col("iv")),
        funding=pl.when(later).then(-0.5).otherwise(pl.col("funding")),
    )
    other_flow = flow.filter(pl.col("ts") < cut_ts)
    lp_flows = lp_frame(market, seeds[1]).filter(pl.col("ts") < cut_ts)
    other, _ = simulate_frames(strategy, changed, other_flow, lp_flows=lp_flows)
    assert tables.steps.head(k + 1).equals(other.steps.head(k + 1))
    early = pl.col("ts") < cut_ts
    hindsight = "pnl_held_to_expiry"  # an ex-post analytic of each fill, by definition
    assert (
        tables.trades.filter(early)
        .drop(hindsight)
        .equals(other.trades.filter(early).drop(hindsight))
    )
    assert tables.hedges.filter(early).equals(other.hedges.filter(early))


@SETTINGS
@given(engine_choices, scenario)
def test_same_inputs_same_outputs(strategy, seeds):
    _, _, first, first_summary = run_scenario(strategy, seeds)
    _, _, again, again_summary = run_scenario(strategy, seeds)
    for name in ("steps", "trades", "hedges", "series"):
        assert getattr(first, name).equals(getattr(again, name))
    assert first_summary.equals(again_summary)


@SETTINGS
@given(engine_choices, scenario)
def test_no_flow_and_no_yield_means_nav_never_moves(strategy, seeds):
    strategy["pool"]["idle_yield"] = 0.0
    strategy["lp"]["run_drawdown"] = 0.0
    market = market_frame(seeds[2], seed=seeds[0], uneven=seeds[3], funding=0.2)
    empty = flow_frame(market, 0)
    tables, summary = simulate_frames(strategy, market, empty)
    assert (tables.steps["nav"] == strategy["pool"]["initial_capital"]).all()
    assert (tables.steps["pnl_total"] == 0.0).all()
    assert tables.hedges.height == 0


@SETTINGS
@given(engine_choices, st.integers(0, 10_000), st.integers(1, 60))
def test_full_collateral_never_over_commits(strategy, seed, n_trades):
    """Flat market, pool only sells: the requirement moves only with trades and NAV only rises,
    so utilisation above max_utilisation could only come from over-filling."""
    strategy = no_fees(
        pool={
            "collateral": "full",
            "max_utilisation": strategy["pool"]["max_utilisation"],
            "initial_capital": strategy["pool"]["initial_capital"],
        },
        pricing={"base_fee": strategy["pricing"]["base_fee"]},
        hedge={"policy": strategy["hedge"]["policy"], "threshold": 0.01},
    )
    market = market_frame(30, seed=seed, vol=0.0).with_columns(iv=pl.lit(0.7))
    flow = flow_frame(market, n_trades, seed=seed, sides=(1,))
    tables, _ = simulate_frames(strategy, market, flow)
    cap = strategy["pool"]["max_utilisation"]
    assert tables.steps["utilisation"].max() <= cap * (1 + 1e-12)
    assert tables.trades["filled"].sum() > 0
