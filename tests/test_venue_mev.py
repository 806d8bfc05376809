"""A venue that remembers, and sandwich attacks on the hedge (docs/design.md, "The hedging
venue" and "Sandwich attacks"), each mechanism alone against numbers computed by hand from the
constant-product closed forms.

The hedges here are exact: the pool sells calls struck at 1 on a spot of 100, whose delta is 1.0
to the last bit, so every_trade buys exactly as many units as it sold calls.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import polars as pl
import pytest
from scenarios import assert_reconciles
from scenarios import hourly_flow as flow
from scenarios import hourly_market as market

from backtest.kernel.types import PNL_COMPONENTS
from backtest.runner import simulate_frames

S0 = 100.0
WEEK = 7 * 24
BASE: dict[str, dict[str, Any]] = {
    "pool": {"initial_capital": 200_000.0, "collateral": "full", "max_utilisation": 1.0},
    "pricing": {"base_fee": 0.0, "spot_fee": 0.0},
    "hedge": {"policy": "every_trade"},
    "slippage": {"model": "cpmm", "liquidity_usd": 1e6, "fee_bps": 0.0},
}


def strategy(**sections: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {name: dict(keys) for name, keys in BASE.items()}
    for name, keys in sections.items():
        out.setdefault(name, {}).update(keys)
    return out


def run(strat, mkt, flw):
    """simulate_frames + the ledger's invariants. A venue that remembers may fill a hedge
    better than spot (trading back against the pool's own footprint), so its hedge cost is
    not a cost at every tick: own impact, against the venue price before, always is."""
    tables, summary = simulate_frames(strat, mkt, flw)
    if strat["slippage"].get("arb_half_life", 0.0) > 0.0:
        parts = tables.steps.select(pl.sum_horizontal(*PNL_COMPONENTS)).to_series()
        assert np.allclose(parts, tables.steps["pnl_total"], rtol=0, atol=1e-9 * 2e5)
        assert float(summary["reconcile_max_abs"].max()) <= 1e-9 * 2e5
    else:
        assert_reconciles(tables, summary)
    h = tables.hedges
    own = h["qty"] * (h["exec_price"] - h["venue_price_before"])
    assert (own.fill_nan(0.0) >= -1e-9).all() and (h["mev_cost"] >= 0).all()
    return tables, summary.row(0, named=True)


def sold(hour: int, size: float, side: int = +1):
    """A trader buys (side +1; -1 sells back) `size` calls struck at 1: delta exactly 1."""
    return (hour, WEEK, 1.0, "C", side, size)


def reserves(liquidity: float, spot: float) -> tuple[float, float]:
    return liquidity / (2 * spot), liquidity / 2


def buy_cost(x: float, y: float, q: float, gamma: float = 1.0) -> float:
    """USD paid for q units out of reserves (x, y), the fee on the input leaving the curve."""
    return y * q / (x - q) / gamma


def sell_proceeds(x: float, y: float, q: float, gamma: float = 1.0) -> float:
    return y * q * gamma / (x + q * gamma)


# --- item 1: the venue remembers -------------------------------------------------------------


def test_re_anchored_venue_is_the_default():
    """arb_half_life 0: each hedge meets the venue at spot; venue prices are still recorded."""
    tables, _ = run(strategy(), market([S0] * 3), flow(sold(0, 100.0), sold(1, 100.0)))
    h = tables.hedges
    assert h.height == 2
    np.testing.assert_allclose(h["venue_price_before"], S0, rtol=0)
    x, y = reserves(1e6, S0)
    np.testing.assert_allclose(h["exec_price"], buy_cost(x, y, 100.0) / 100.0, rtol=1e-14)
    np.testing.assert_allclose(h["venue_price_after"], x * y / (x - 100.0) ** 2, rtol=1e-14)


def test_round_trip_on_a_venue_without_arbitrage_matches_the_closed_form():
    """Buy q, then sell q an hour later into the venue the buy left (arb_half_life = inf).
    With fee f, gamma = 1 - f: the buy pays y q / ((x - q) gamma), leaving x1 = x - q and
    y1 = x y / x1; the sale gets y1 gamma q / (x1 + gamma q). With no fee the round trip is free
    and the venue is back at spot; with a fee it loses exactly the difference."""
    q = 500.0
    for fee_bps in (0.0, 30.0):
        gamma = 1.0 - fee_bps * 1e-4
        strat = strategy(
            slippage={"liquidity_usd": 1e6, "fee_bps": fee_bps, "arb_half_life": math.inf}
        )
        tables, s = run(strat, market([S0] * 3), flow(sold(0, q), sold(1, q, side=-1)))
        h = tables.hedges
        assert h["qty"].to_list() == [q, -q]
        x, y = reserves(1e6, S0)
        paid = buy_cost(x, y, q, gamma)
        x1, y1 = x - q, x * y / (x - q)
        got = sell_proceeds(x1, y1, q, gamma)
        assert h["exec_price"][0] == pytest.approx(paid / q, rel=1e-13)
        assert h["venue_price_before"][1] == pytest.approx(y1 / x1, rel=1e-13)
        assert h["exec_price"][1] == pytest.approx(got / q, rel=1e-13)
        round_trip = float(h["slippage_cost"].sum())
        assert round_trip == pytest.approx(paid - got, rel=1e-12, abs=1e-9)
        assert -s["pnl_hedge_cost"] == pytest.approx(paid - got, rel=1e-12, abs=1e-9)
        if fee_bps == 0.0:
            assert round_trip == pytest.approx(0.0, abs=1e-8)
            assert h["venue_price_after"][1] == pytest.approx(S0, rel=1e-13)
        else:
            assert round_trip > 0.0


def test_repeated_hedges_into_a_thin_venue_compound():
    """Three buys of 300 units, an hour apart, into a venue of x = 5000 units. Without
    arbitrage (no fee) they cost what one buy of 900 costs: y 900 / (x - 900), path independence
    of x y = k; each pays more than the one before. Re-anchored, each costs y 300 / (x - 300).
    With a 1-hour half-life, half the dislocation is left at the next hedge."""
    q, n = 300.0, 3
    x, y = reserves(1e6, S0)
    mkt = market([S0] * (n + 1))
    flw = flow(*[sold(h, q) for h in range(n)])
    costs = {}
    for half_life in (0.0, 1.0, math.inf):
        strat = strategy(slippage={"arb_half_life": half_life})
        tables, s = run(strat, mkt, flw)
        h = tables.hedges
        assert h["qty"].to_list() == [q] * n
        costs[half_life] = float((h["qty"] * h["exec_price"]).sum())
        if half_life == 1.0:
            g1 = math.log(h["venue_price_after"][0] / S0)
            assert h["venue_price_before"][1] == pytest.approx(S0 * math.exp(g1 / 2), rel=1e-13)
        if half_life == math.inf:
            assert np.all(np.diff(h["exec_price"].to_numpy()) > 0)  # each pays more
            np.testing.assert_allclose(
                h["venue_price_before"][1:], h["venue_price_after"][:-1], rtol=1e-13
            )
    assert costs[0.0] == pytest.approx(n * buy_cost(x, y, q), rel=1e-13)
    assert costs[math.inf] == pytest.approx(buy_cost(x, y, n * q), rel=1e-12)
    assert costs[0.0] < costs[1.0] < costs[math.inf]


def test_arbitrage_pulls_the_venue_back_by_half_lives():
    """After one buy the venue sits at p1 > S; with no more hedges the dislocation ln(p/S)
    halves every half-life, across a spot move (the market's own moves pass through)."""
    q, half_life = 400.0, 2.0
    strat = strategy(slippage={"arb_half_life": half_life})
    spots = [S0, S0, 110.0, 110.0, 120.0]
    # the trader sells the calls back at tick 4: the hedge sells there, into what is left
    tables, _ = run(strat, market(spots), flow(sold(0, q), sold(4, q, side=-1)))
    h = tables.hedges
    g0 = math.log(h["venue_price_after"][0] / S0)
    expected = 120.0 * math.exp(g0 * 2.0 ** (-4 / half_life))
    assert h["venue_price_before"][1] == pytest.approx(expected, rel=1e-12)


# --- item 3: sandwiches -----------------------------------------------------------------------

# The hand-computed sandwich: L = 1e8 at S = 100 (x = 500,000 units, y = 5e7 USD), no fee, the
# pool buys q = 500 with a 1 % tolerance, the attacker pays 10 USD. The largest front-run leaves
# the hedge at exactly its limit: x1 = (q + sqrt(q^2 + 4 x^2 / 1.01)) / 2, a = x - x1
# = 2231.3420832867... units. The hedge pays 101 x 500 = 50,500 instead of
# y q / (x - q) = 50,050.0500500...: 449.9499499... more. Without a fee the venue ends where the
# hedge alone leaves it, so the attacker's gross profit is exactly the pool's extra cost:
# 449.9499499... - 10 = 439.9499499... (computed to 40 digits with decimal).
SANDWICH = {
    "slippage": {"liquidity_usd": 1e8},
    "mev": {"model": "sandwich", "max_slippage": 0.01, "attacker_cost_usd": 10.0},
}


def test_a_single_sandwich_on_a_known_cpmm():
    tables, s = run(strategy(**SANDWICH), market([S0, S0]), flow(sold(0, 500.0)))
    h = tables.hedges.row(0, named=True)
    assert h["qty"] == 500.0 and h["unfilled"] == 0.0 and h["sandwiched"]
    assert h["exec_price"] == pytest.approx(50_050.05005005005 / 500.0, rel=1e-13)
    assert h["mev_cost"] == pytest.approx(449.94994994994995, rel=1e-9)
    assert h["attacker_pnl"] == pytest.approx(439.94994994994995, rel=1e-9)
    assert h["qty"] * h["exec_price"] + h["mev_cost"] == pytest.approx(50_500.0, rel=1e-12)
    assert h["venue_price_after"] == pytest.approx(S0 * (500_000 / 499_500) ** 2, rel=1e-12)
    assert s["attacker_pnl"] == pytest.approx(439.94994994994995, rel=1e-9)
    assert s["n_sandwiched"] == 1 and s["hedge_mev"] == pytest.approx(h["mev_cost"])


def test_a_sandwich_on_a_hedge_that_sells():
    """The mirror case: the pool buys 500 calls, so its hedge sells 500 units. The attacker sells
    first, as far as leaves the hedge receiving exactly 99 a unit (its 1 % limit): 49,500 instead
    of y q / (x + q) = 49,950.04995...; no fee, so he earns that 450.04995... less his 10 USD."""
    tables, s = run(strategy(**SANDWICH), market([S0, S0]), flow(sold(0, 500.0, side=-1)))
    h = tables.hedges.row(0, named=True)
    base = 5e7 * 500.0 / 500_500.0
    assert h["qty"] == -500.0 and h["sandwiched"]
    assert h["exec_price"] == pytest.approx(base / 500.0, rel=1e-13)
    assert h["mev_cost"] == pytest.approx(base - 49_500.0, rel=1e-9)
    assert h["attacker_pnl"] == pytest.approx(base - 49_500.0 - 10.0, rel=1e-9)


def test_a_sandwich_with_a_fee_is_worth_its_search():
    """With a fee the attacker pays it twice: the profit is the best over the front-runs the
    limit allows, which we find here by brute force on a fine grid (5 bp: 213.30 USD gross at
    the largest front-run, 2106.9 units; at 15 bp no front-run pays, see below)."""
    strat = strategy(slippage={"liquidity_usd": 1e8, "fee_bps": 5.0}, mev=SANDWICH["mev"])
    tables, _ = run(strat, market([S0, S0]), flow(sold(0, 500.0)))
    h = tables.hedges.row(0, named=True)
    x, y = reserves(1e8, S0)
    k, gamma, q = x * y, 1.0 - 5e-4, 500.0
    x1_min = (q + math.sqrt(q * q + 4 * k / (gamma * (y / x) * 1.01))) / 2

    def profit(a):
        paid = buy_cost(x, y, a, gamma)
        x1 = x - a
        x2 = x1 - q
        return sell_proceeds(x2, k / x2, a, gamma) - paid

    grid = np.linspace(0.0, x - x1_min, 200_001)
    best = max(profit(a) for a in grid)
    assert best > 10.0 and h["sandwiched"]
    assert h["attacker_pnl"] == pytest.approx(best - 10.0, rel=1e-6)
    x1 = x - grid[np.argmax([profit(a) for a in grid])]
    victim = k / x1 * q / (x1 - q) / gamma
    assert h["mev_cost"] == pytest.approx(victim - buy_cost(x, y, q, gamma), rel=1e-5)
    assert victim / q <= S0 * 1.01 * (1 + 1e-12)  # within the pool's limit
    assert h["attacker_pnl"] == pytest.approx(213.298430310213 - 10.0, rel=1e-6)
    at_15bp = strategy(slippage={"liquidity_usd": 1e8, "fee_bps": 15.0}, mev=SANDWICH["mev"])
    tables, _ = run(at_15bp, market([S0, S0]), flow(sold(0, 500.0)))
    assert not tables.hedges["sandwiched"][0] and tables.hedges["mev_cost"][0] == 0.0


def test_an_attack_that_does_not_pay_is_not_made():
    strat = strategy(**SANDWICH) | {"mev": SANDWICH["mev"] | {"attacker_cost_usd": 500.0}}
    tables, s = run(strat, market([S0, S0]), flow(sold(0, 500.0)))
    h = tables.hedges.row(0, named=True)
    assert not h["sandwiched"] and h["mev_cost"] == 0.0 and h["attacker_pnl"] == 0.0
    assert s["attacker_pnl"] == 0.0 and s["n_sandwiched"] == 0


def test_only_a_hedge_that_follows_a_trade_is_seen():
    """With latency 1 the hedge fills in the tick after the trade, with no flow of its own."""
    strat = strategy(**SANDWICH, hedge={"policy": "every_trade", "latency": 1})
    tables, _ = run(strat, market([S0, S0, S0]), flow(sold(0, 500.0)))
    h = tables.hedges.row(0, named=True)
    assert h["qty"] == 500.0 and not h["sandwiched"] and h["mev_cost"] == 0.0


def test_max_slippage_cuts_the_hedge_and_leaves_the_delta_open():
    """A thin venue (x = 5000 units): 500 units would move the price 10 %. With a 1 % limit
    the hedge is cut to x (1 - 1 / 1.01) = 49.50495... units, which leaves no room for a
    front-run; the rest of the delta stays open in steps.net_delta."""
    strat = strategy(slippage={"liquidity_usd": 1e6}, mev=SANDWICH["mev"])
    tables, s = run(strat, market([S0, S0]), flow(sold(0, 500.0)))
    h, steps = tables.hedges.row(0, named=True), tables.steps
    cut = 5000.0 * (1 - 1 / 1.01)
    assert h["qty"] == pytest.approx(cut, rel=1e-13)
    assert h["unfilled"] == pytest.approx(500.0 - cut, rel=1e-13)
    assert h["exec_price"] == pytest.approx(S0 * 1.01, rel=1e-13)  # exactly at the limit
    assert not h["sandwiched"] and h["mev_cost"] == 0.0
    assert steps["net_delta"][0] == pytest.approx(-(500.0 - cut), rel=1e-12)


def test_private_submission_pays_a_fee_instead():
    mev = SANDWICH["mev"] | {"submission": "private", "private_fee_bps": 2.0}
    tables, s = run(
        strategy(slippage={"liquidity_usd": 1e8}, mev=mev), market([S0, S0]), flow(sold(0, 500.0))
    )
    h = tables.hedges.row(0, named=True)
    assert not h["sandwiched"] and h["attacker_pnl"] == 0.0
    assert h["mev_cost"] == pytest.approx(2e-4 * 500.0 * S0, rel=1e-13)
    assert h["exec_price"] == pytest.approx(50_050.05005005005 / 500.0, rel=1e-13)


def test_min_hedge_usd_skips_small_hedges():
    """A 5k hedge under a 10k minimum is not sent (the delta stays open); a 60k one is."""
    strat = strategy(mev={"min_hedge_usd": 10_000.0})
    tables, _ = run(strat, market([S0] * 3), flow(sold(0, 50.0), sold(1, 600.0)))
    h, steps = tables.hedges, tables.steps
    assert h.height == 1 and h["qty"][0] == 650.0  # tick 1 closes the whole open delta
    assert steps["net_delta"][0] == pytest.approx(-50.0) and steps["net_delta"][1] == 0.0


def test_non_cpmm_venues_record_no_venue_price():
    strat = strategy(slippage={"model": "fixed_bps", "bps": 5.0})
    tables, _ = run(strat, market([S0, S0]), flow(sold(0, 100.0)))
    h = tables.hedges.row(0, named=True)
    assert math.isnan(h["venue_price_before"]) and math.isnan(h["venue_price_after"])
    assert h["unfilled"] == 0.0 and not h["sandwiched"]


def test_summary_of_a_run_without_hedges_has_zero_attacker_pnl():
    tables, s = run(strategy(hedge={"policy": "none"}), market([S0, S0]), flow(sold(0, 1.0)))
    assert tables.hedges.height == 0
    assert s["attacker_pnl"] == 0.0 and s["n_sandwiched"] == 0


def test_defaults_leave_every_table_unchanged():
    """[mev] model "flat" and arb_half_life 0 spelt out: the same tables as without the keys."""
    mkt, flw = market([S0, 101.0, 99.0]), flow(sold(0, 300.0), sold(1, 100.0, side=-1))
    plain, _ = simulate_frames(strategy(), mkt, flw)
    spelt = strategy(slippage={"arb_half_life": 0.0}, mev={"model": "flat", "min_hedge_usd": 0.0})
    same, _ = simulate_frames(spelt, mkt, flw)
    for name in ("steps", "trades", "hedges"):
        assert getattr(plain, name).drop("run_id").equals(getattr(same, name).drop("run_id"))
    assert isinstance(plain.hedges, pl.DataFrame)
