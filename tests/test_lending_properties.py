"""The ledger's properties with lent collateral on (tests/test_properties.py's random pools,
plus a money market that is squeezed inside the run): reconciliation, conservation and
determinism hold; the lending stocks stay consistent; share 0 changes nothing."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import event, given
from scenarios import Scenario, random_scenario
from test_properties import (
    SEEDS,
    SETTINGS,
    assert_ledger_holds,
    assert_same_runs,
    rebuilt_nav,
    scale,
)

from backtest.runner import simulate_frames

pytestmark = pytest.mark.property


def _pick(rng: np.random.Generator, *options):
    return options[int(rng.integers(len(options)))]


def with_lending(sc: Scenario) -> Scenario:
    """The scenario with a money market drawn from its own stream: small enough against the
    pool that its free liquidity binds, squeezed for part of the run."""
    rng = np.random.default_rng([sc.seed, 12])
    first, last = sc.market["ts"].min(), sc.market["ts"].max()
    span_days = (last - first).total_seconds() / 86_400
    start = first + (last - first) * float(rng.uniform(0.05, 0.6))
    lending = {
        "share": float(_pick(rng, 0.3, 0.8, 1.0)),
        "base_rate": float(_pick(rng, 0.0, 0.02)),
        "slope1": 0.04,
        "kink": float(_pick(rng, 0.8, 0.9)),
        "slope2": float(_pick(rng, 0.6, 3.0)),
        "reserve_factor": 0.1,
        "market_usd": sc.capital * float(_pick(rng, 0.5, 2.0, 100.0)),
        "recall_share": float(_pick(rng, 0.2, 1.0)),
        "util_mean": float(_pick(rng, 0.5, 0.9)),
        "util_reversion": float(_pick(rng, 0.5, 5.0)),
        "util_vol": float(_pick(rng, 0.5, 2.0)),
        "squeeze_start": start.isoformat(),
        "squeeze_days": span_days * float(_pick(rng, 0.0, 0.2, 0.5)),
        "squeeze_utilisation": float(_pick(rng, 0.99, 1.0)),
        "bad_debt_share": float(_pick(rng, 0.0, 0.0, 0.3)),
        "max_supply_utilisation": float(_pick(rng, 1.0, 0.9)),
    }
    strategy = {name: dict(keys) for name, keys in sc.strategy.items()} | {"lending": lending}
    return Scenario(sc.seed, strategy, sc.market, sc.flow, sc.lp)


def simulate(sc: Scenario):
    tables, summary = simulate_frames(sc.strategy, sc.market, sc.flow, lp_flows=sc.lp)
    for name, hit in features(tables).items():
        if hit:
            event(name)
    return tables, summary


def features(tables) -> dict[str, bool]:
    steps = tables.steps
    return {
        "lent": bool((steps["lent"] > 0).any()),
        "lent cash stuck": bool((steps["lent_locked"] > 0).any()),
        "collateral_locked": bool((tables.trades["reject_reason"] == "collateral_locked").any()),
        "withdrawal waited": bool(tables.lp["waited"].any()),
        "recall blocked": bool(steps["recall_blocked"].any()),
    }


@SETTINGS
@given(SEEDS)
def test_attribution_reconciles_every_tick_with_lending(seed):
    sc = with_lending(random_scenario(seed))
    tables, summary = simulate(sc)
    steps = tables.steps
    atol = assert_ledger_holds(sc, tables, summary)
    # The lending stocks: lent is a non-negative part of cash, stuck is part of lent, and lent
    # cash above free cash is a blocked recall (cash in hand short of the locked cash).
    lent, stuck = steps["lent"].to_numpy(), steps["lent_locked"].to_numpy()
    free = steps["free_cash"].to_numpy()
    assert (lent >= 0).all() and (stuck >= 0).all() and (stuck <= lent + atol).all()
    over = lent > np.maximum(free, 0.0) + atol
    assert steps["recall_blocked"].to_numpy()[over].all()
    assert (steps["lending_yield"] >= 0).all()
    # Every mechanism has a payer: the pool's yield is a share of what the market's borrowers
    # paid over the same time, never more; a credit loss only at a squeeze's end.
    assert (steps["lending_yield"] <= steps["lending_borrow_interest"] + atol).all()
    assert (steps["pnl_credit"] <= 0).all()
    # A row cut for locked collateral happened in a tick with lent cash stuck.
    cut = tables.trades.filter(pl.col("reject_reason") == "collateral_locked")
    if cut.height:
        at = steps.join(cut.select("path_id", "ts").unique(), on=["path_id", "ts"])
        assert (at["lent_locked"] > 0).all() and at["recall_blocked"].all()


@SETTINGS
@given(SEEDS)
def test_money_is_conserved_with_lending(seed):
    """The yield is cash interest in pnl_interest: final NAV rebuilt from the tables as
    without lending."""
    sc = with_lending(random_scenario(seed, expire_inside=True))
    tables, _ = simulate(sc)
    for path_id in tables.steps["path_id"].unique().to_list():
        steps = tables.steps.filter(pl.col("path_id") == path_id)
        rebuilt = rebuilt_nav(sc, tables, path_id)
        assert abs(steps["nav"][-1] - rebuilt) <= 1e-8 * scale(sc, tables.steps)


@SETTINGS
@given(SEEDS)
def test_same_inputs_same_outputs_with_lending(seed):
    sc = with_lending(random_scenario(seed))
    assert_same_runs(*simulate(sc), *simulate(sc))


@SETTINGS
@given(SEEDS)
def test_share_zero_changes_nothing(seed):
    sc = random_scenario(seed)
    off = with_lending(sc)
    off.strategy["lending"]["share"] = 0.0
    assert_same_runs(
        *simulate_frames(sc.strategy, sc.market, sc.flow, lp_flows=sc.lp),
        *simulate_frames(off.strategy, off.market, off.flow, lp_flows=off.lp),
    )


def test_the_draws_exercise_lending():
    """How often the drawn scenarios hit what the properties are about (not left to chance)."""
    n = 60
    hits: dict[str, int] = {}
    for seed in range(n):
        sc = with_lending(random_scenario(seed))
        tables, _ = simulate_frames(sc.strategy, sc.market, sc.flow, lp_flows=sc.lp)
        for name, hit in features(tables).items():
            hits[name] = hits.get(name, 0) + hit
    print(hits)
    assert hits["lent"] >= 0.9 * n, hits
    for name in ("lent cash stuck", "collateral_locked", "withdrawal waited", "recall blocked"):
        assert hits[name] >= 0.05 * n, hits
