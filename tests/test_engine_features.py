"""Engine features, one at a time, on tiny hand-built markets and flows.

Each test builds a few hourly ticks and a handful of flow rows so the expected numbers follow
from docs/design.md, the kernel docstrings and `backtest.pricing`, then checks the engine against
them. Every run also checks the accounting invariants (components sum to pnl_total, NAV reconciles).
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import numpy as np
import polars as pl
import pytest
from scenarios import T0, assert_reconciles
from scenarios import hourly_flow as flow
from scenarios import hourly_market as market

from backtest.kernel.types import SPOT_SHOCKS, VOL_SHOCKS
from backtest.pricing import greeks, price
from backtest.runner import simulate_frames

HOUR = dt.timedelta(hours=1)
YEAR_HOURS = 365.0 * 24.0

# A pool with nothing switched on: no fees, no hedging, free execution, full collateral with room
# for twice the 1000 short calls most tests sell.
BASE: dict[str, dict[str, Any]] = {
    "pool": {"initial_capital": 200_000.0, "collateral": "full", "max_utilisation": 1.0},
    "pricing": {"base_fee": 0.0, "spot_fee": 0.0},
    "hedge": {"policy": "none"},
    "slippage": {"model": "none"},
}
INITIAL = BASE["pool"]["initial_capital"]


# --- builders ---------------------------------------------------------------------------------


def strategy(**sections: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """BASE with the given sections' keys replaced."""
    out = {name: dict(keys) for name, keys in BASE.items()}
    for name, keys in sections.items():
        out.setdefault(name, {}).update(keys)
    return out


def bs(kind: str, spot: float, strike: float, hours_left: float, vol: float) -> float:
    return float(price(kind, spot, strike, max(hours_left, 0.0) / YEAR_HOURS, vol))


def bs_greeks(kind: str, spot: float, strike: float, hours_left: float, vol: float):
    return greeks(kind, spot, strike, max(hours_left, 0.0) / YEAR_HOURS, vol)


# --- running and invariants -------------------------------------------------------------------


def run(strat, mkt: pl.DataFrame, flw: pl.DataFrame):
    """simulate_frames + invariants; returns (tables, summary row of path 0 as a dict)."""
    tables, summary = simulate_frames(strat, mkt, flw)
    assert_reconciles(tables, summary)
    return tables, summary.row(0, named=True)


def col(frame: pl.DataFrame, name: str) -> np.ndarray:
    return frame[name].to_numpy()


def tick_of(ts_col: pl.Series) -> np.ndarray:
    """Hours since T0 of a timestamp column (= tick index for the default hourly markets)."""
    return (
        (ts_col.dt.epoch("ns").to_numpy() - int(T0.timestamp()) * 10**9) // 3_600_000_000_000
    ).astype(int)


def book_nav(tables, iv: float) -> np.ndarray:
    """NAV rebuilt from the trades and hedges alone: cash + sum(qty x BS mark) + units x spot.

    Positions are the cumulative fills (settled at the first tick at/after expiry); valid for
    spot hedges, no smile and no liquidation.
    """
    steps, trades = tables.steps, tables.trades
    hours = tick_of(steps["ts"])
    spot = col(steps, "spot")
    out = col(steps, "cash") + col(steps, "hedge_units") * spot
    trade_hour = tick_of(trades["ts"])
    exp_hour = (
        trades["expiry"].dt.epoch("ns").to_numpy() - int(T0.timestamp()) * 10**9
    ) / 3_600_000_000_000
    for k, h in enumerate(hours):
        for j in range(trades.height):
            if trade_hour[j] <= h and exp_hour[j] > h:
                qty = -trades["side"][j] * trades["filled"][j]
                out[k] += qty * bs(
                    trades["kind"][j], spot[k], trades["strike"][j], exp_hour[j] - h, iv
                )
    return out


# A short-gamma book that makes the hedge policies work: the pool sells 1000 one-week ATM calls.
WEEK = 7 * 24
SHORT_CALLS = (0, WEEK, 100.0, "C", +1, 1000.0)


# --- hedge policies ---------------------------------------------------------------------------


def pre_hedge_net(steps: pl.DataFrame) -> np.ndarray:
    """Net delta each tick before that tick's hedge: book delta + the hedge carried in."""
    units = col(steps, "hedge_units")
    return col(steps, "book_delta") + np.concatenate([[0.0], units[:-1]])


def test_policy_none_never_hedges():
    tables, s = run(
        strategy(hedge={"policy": "none"}),
        market([100, 103, 97, 101]),
        flow(SHORT_CALLS, (2, WEEK, 95, "P", +1, 300)),
    )
    steps = tables.steps
    assert tables.hedges.height == 0 and s["n_hedges"] == 0
    assert (steps["hedge_units"] == 0).all()
    np.testing.assert_array_equal(col(steps, "net_delta"), col(steps, "book_delta"))
    assert (np.abs(col(steps, "book_delta"))[1:] > 100).all()
    assert s["pnl_hedge_cost"] == 0.0


def test_every_trade_hedges_to_zero_on_fill_ticks_only():
    # max_utilisation 0.5: the first sale fills only to the cap; at tick 2 spot is up, the pool is
    # over-utilised and the next sale is rejected outright, so tick 2 has flow but no fill.
    strat = strategy(pool={"max_utilisation": 0.5}, hedge={"policy": "every_trade"})
    tables, s = run(
        strat,
        market([100, 101, 102, 100.5, 101.5, 100, 99]),
        flow(
            (1, WEEK, 100, "C", +1, 2000),
            (2, WEEK, 100, "C", +1, 10),
            (3, WEEK, 100, "C", -1, 300),
            (5, WEEK, 95, "P", -1, 100),
        ),
    )
    steps, trades, hedges = tables.steps, tables.trades, tables.hedges
    assert list(trades["reject_reason"]) == ["utilisation", "utilisation", "", ""]
    assert 0 < trades["filled"][0] < 2000 and trades["filled"][1] == 0
    assert sorted(tick_of(hedges["ts"])) == [1, 3, 5]
    assert set(hedges["reason"]) == {"every_trade"}
    net = col(steps, "net_delta")
    units = col(steps, "hedge_units")
    for t in (1, 3, 5):
        assert abs(net[t]) < 1e-9
    for t in (2, 4, 6):  # spot moved, so the book delta did too: no fill, no hedge
        assert units[t] == units[t - 1]
        assert abs(net[t]) > 1.0


@pytest.mark.parametrize("rebalance_to", ["zero", "edge"])
def test_threshold_band(rebalance_to):
    threshold = 0.025
    strat = strategy(
        hedge={"policy": "threshold", "threshold": threshold, "rebalance_to": rebalance_to}
    )
    spots = [100, 100.5, 100.8, 101.5, 101.2, 100.0, 99.4, 99.9, 98.5, 98.9]
    tables, _ = run(strat, market(spots), flow(SHORT_CALLS))
    steps = tables.steps
    spot, nav = col(steps, "spot"), col(steps, "nav")
    pre = pre_hedge_net(steps)
    post = col(steps, "net_delta")
    hedged = np.zeros(len(spots), bool)
    hedged[tick_of(tables.hedges["ts"])] = True
    # A hedge happens exactly when the net delta left the band ...
    np.testing.assert_array_equal(hedged, np.abs(pre) * spot / nav > threshold)
    assert 2 <= hedged.sum() <= len(spots) - 2
    # ... and lands on zero or on the band's edge (same side as the exposure).
    target = 0.0 if rebalance_to == "zero" else threshold
    util = post * spot / nav
    np.testing.assert_allclose(np.abs(util[hedged]), target, atol=1e-12)
    if rebalance_to == "edge":
        assert (np.sign(post[hedged]) == np.sign(pre[hedged])).all()
    # Inside the band nothing trades and the exposure is what the book carried in.
    np.testing.assert_array_equal(post[~hedged], pre[~hedged])
    assert (np.abs(util[~hedged]) <= threshold).all()


def test_periodic_hedges_on_first_tick_of_each_bucket():
    # Hourly ticks from 01:00 with 04:00 missing; 4h buckets are 00-04, 04-08, 08-12, 12-16 UTC.
    hours = [1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13]
    spots = [100 + 0.3 * ((k * 7) % 5 - 2) for k in range(len(hours))]
    strat = strategy(hedge={"policy": "periodic", "interval": "4h"})
    tables, _ = run(strat, market(spots, hours=hours), flow((1, WEEK, 100.0, "C", +1, 1000.0)))
    hedge_hours = sorted(tick_of(tables.hedges["ts"]))
    assert hedge_hours == [1, 5, 8, 12]
    assert set(tables.hedges["reason"]) == {"periodic"}
    steps = tables.steps.with_columns(hour=pl.Series(tick_of(tables.steps["ts"])))
    at_hedge = steps.filter(pl.col("hour").is_in(hedge_hours))
    assert (at_hedge["net_delta"].abs() < 1e-9).all()
    others = steps.filter(~pl.col("hour").is_in(hedge_hours))
    assert (others["net_delta"].abs() > 1e-3).all()  # exposure left alone between buckets


def ww_band(gamma: float, spot: float, lam: float, nav: float, risk_aversion: float) -> float:
    """hedge.whalley_wilmott_band: (3/2 lambda S Gamma^2 NAV / risk_aversion)^(1/3)."""
    return (1.5 * lam * spot * gamma**2 * nav / risk_aversion) ** (1.0 / 3.0)


def run_ww(bps: float, risk_aversion: float, spots):
    strat = strategy(
        hedge={"policy": "whalley_wilmott", "risk_aversion": risk_aversion},
        slippage={"model": "fixed_bps", "bps": bps},
    )
    return run(strat, market(spots), flow(SHORT_CALLS))


def test_whalley_wilmott_band_from_formula():
    spots = [100, 101, 102, 99, 96, 95, 97, 100, 104]
    tables, _ = run_ww(5.0, 1.0, spots)
    steps = tables.steps
    spot = col(steps, "spot")
    gamma = np.abs(col(steps, "book_gamma"))
    # book gamma is the hand-computed gamma of the 1000 short calls
    for t in range(len(spots)):
        g = bs_greeks("C", spot[t], 100.0, WEEK - t, 0.6).gamma
        assert gamma[t] == pytest.approx(1000.0 * g, rel=1e-12)
    nav_before_hedge = col(steps, "nav") - col(steps, "pnl_hedge_cost")
    band = np.array(
        [ww_band(gamma[t], spot[t], 5e-4, nav_before_hedge[t], 1.0) for t in range(len(spots))]
    )
    pre, post = pre_hedge_net(steps), col(steps, "net_delta")
    hedged = np.zeros(len(spots), bool)
    hedged[tick_of(tables.hedges["ts"])] = True
    np.testing.assert_array_equal(hedged, np.abs(pre) > band)
    assert hedged[0] and (~hedged).sum() >= 1
    np.testing.assert_allclose(np.abs(post[hedged]), band[hedged], rtol=1e-9)
    assert (np.sign(post[hedged]) == np.sign(pre[hedged])).all()  # to the near edge
    np.testing.assert_array_equal(post[~hedged], pre[~hedged])


def test_whalley_wilmott_band_widens_with_cost_narrows_with_risk_aversion():
    spots = [100, 100]
    base = abs(run_ww(5.0, 1.0, spots)[0].steps["net_delta"][0])
    costly = abs(run_ww(20.0, 1.0, spots)[0].steps["net_delta"][0])
    averse = abs(run_ww(5.0, 8.0, spots)[0].steps["net_delta"][0])
    assert averse < base < costly
    assert costly / base == pytest.approx(4.0 ** (1 / 3), rel=1e-3)
    assert averse / base == pytest.approx(0.5, rel=1e-3)


def test_latency_fills_later_at_later_price_without_double_hedging():
    bps = 10.0
    strat = strategy(
        hedge={"policy": "threshold", "threshold": 0.05, "latency": 2},
        slippage={"model": "fixed_bps", "bps": bps},
    )
    spots = [100, 100, 100.2, 100.4, 100.3, 100.1, 100.2]
    tables, _ = run(strat, market(spots), flow((1, WEEK, 100.0, "C", +1, 1000.0)))
    steps, hedges = tables.steps, tables.hedges
    book_delta = col(steps, "book_delta")
    # Decided at tick 1 (net delta about -520, far outside a 50-unit band); while it is in flight
    # tick 2 sees the pending order and does nothing; it fills at tick 3 at tick 3's price.
    assert hedges.height == 1
    h = hedges.row(0, named=True)
    assert tick_of(hedges["ts"])[0] == 3
    assert h["qty"] == pytest.approx(-book_delta[1], rel=1e-12)
    assert h["spot"] == spots[3]
    assert h["exec_price"] == pytest.approx(spots[3] * (1 + bps * 1e-4), rel=1e-12)
    assert h["reason"] == "threshold"
    units = col(steps, "hedge_units")
    assert units[1] == units[2] == 0.0
    assert units[3] == pytest.approx(h["qty"], rel=1e-12)
    assert steps["pnl_hedge_cost"][3] == pytest.approx(-h["qty"] * spots[3] * bps * 1e-4)


def test_latency_second_decision_counts_the_order_in_flight():
    strat = strategy(hedge={"policy": "every_trade", "latency": 2})
    flw = flow((1, WEEK, 100.0, "C", +1, 1000.0), (2, WEEK, 95.0, "P", +1, 800.0))
    tables, _ = run(strat, market([100.0] * 6), flw)
    steps, hedges = tables.steps, tables.hedges
    book_delta = col(steps, "book_delta")
    assert tick_of(hedges["ts"]).tolist() == [3, 4]
    # tick 1 decides -bd1; tick 2 sees that order in flight and decides only the difference.
    np.testing.assert_allclose(
        col(hedges, "qty"), [-book_delta[1], -(book_delta[2] - book_delta[1])], rtol=1e-12
    )
    assert steps["hedge_units"][4] == pytest.approx(-book_delta[2], rel=1e-12)
    assert abs(steps["net_delta"][4]) < 1.0  # only theta drift of the delta remains


def test_hedge_cap_limits_position():
    cap = 200.0
    strat = strategy(hedge={"policy": "every_trade", "hedge_cap": cap})
    tables, _ = run(
        strat,
        market([100, 100, 101, 100]),
        flow(SHORT_CALLS, (1, WEEK, 100.0, "C", +1, 100.0), (3, WEEK, 100.0, "C", -1, 900.0)),
    )
    steps = tables.steps
    units = col(steps, "hedge_units")
    assert (np.abs(units) <= cap + 1e-12).all()
    assert units[0] == cap  # wanted ~ +516
    assert units[1] == cap and 1 not in tick_of(tables.hedges["ts"])  # at the cap: no trade
    # After the buy-back the book delta is ~ -52: back inside the cap, fully hedged.
    assert abs(steps["net_delta"][3]) < 1e-9 and 0 < units[3] < cap


def test_max_notional_per_step_splits_the_hedge():
    cap_usd = 10_000.0
    strat = strategy(
        hedge={"policy": "periodic", "interval": "1h", "max_notional_per_step": cap_usd}
    )
    tables, _ = run(strat, market([100.0] * 9), flow(SHORT_CALLS))
    hedges, steps = tables.hedges, tables.steps
    notional = np.abs(col(hedges, "qty") * col(hedges, "spot"))
    assert (notional <= cap_usd * (1 + 1e-12)).all()
    # ~516 units at 100 = 51.6k: five full 10k steps, then the remainder.
    np.testing.assert_allclose(notional[:5], cap_usd, rtol=1e-12)
    assert tick_of(hedges["ts"])[:6].tolist() == [0, 1, 2, 3, 4, 5]
    assert 0 < notional[5] < cap_usd
    assert abs(steps["net_delta"][5]) < 1e-9
    assert abs(steps["net_delta"][4]) > 10


# --- slippage ---------------------------------------------------------------------------------

S0 = 100.0
IV = 0.6
CPMM_FEE = 5e-4


def cpmm_price(qty: float, spot: float, liquidity: float, fee: float) -> float:
    """Average price of a constant-product trade, reserves x = L/(2S) units, y = L/2 USD."""
    x, y = liquidity / (2 * spot), liquidity / 2
    if qty > 0:  # buy qty units: pay in USD, fee on the input
        return y * qty / (x - qty) / (1 - fee) / qty
    sold = -qty * (1 - fee)
    return y * sold / (x + sold) / -qty


SLIPPAGE_CASES = {
    "none": ({"model": "none"}, lambda q: S0),
    "fixed_bps": ({"model": "fixed_bps", "bps": 7.0}, lambda q: S0 * (1 + np.sign(q) * 7e-4)),
    "sqrt_impact": (
        {"model": "sqrt_impact", "impact_coeff": 0.8, "adv_usd": 2e6},
        lambda q: S0 * (1 + np.sign(q) * 0.8 * IV / math.sqrt(365) * math.sqrt(abs(q) * S0 / 2e6)),
    ),
    "cpmm": (
        {"model": "cpmm", "liquidity_usd": 1e6, "fee_bps": 5.0},
        lambda q: cpmm_price(q, S0, 1e6, CPMM_FEE),
    ),
}


@pytest.mark.parametrize("side_kind", ["C", "P"])  # short calls: hedge buys; short puts: sells
@pytest.mark.parametrize("model", list(SLIPPAGE_CASES))
def test_slippage_exec_price_and_cost(model, side_kind):
    keys, expected_price = SLIPPAGE_CASES[model]
    strat = strategy(hedge={"policy": "every_trade"}, slippage=keys)
    tables, s = run(strat, market([S0, S0], IV), flow((0, WEEK, 100.0, side_kind, +1, 1000.0)))
    steps, hedges = tables.steps, tables.hedges
    assert hedges.height == 1
    h = hedges.row(0, named=True)
    qty = -steps["book_delta"][0]
    assert h["qty"] == pytest.approx(qty, rel=1e-12)
    assert np.sign(h["qty"]) == (1 if side_kind == "C" else -1)
    assert h["exec_price"] == pytest.approx(expected_price(qty), rel=1e-12)
    if model != "none":
        assert (h["exec_price"] - S0) * np.sign(qty) > 0  # always a worse price
    slip = h["qty"] * (h["exec_price"] - S0)
    assert h["slippage_cost"] == pytest.approx(slip, rel=1e-12, abs=1e-12)
    assert h["gas_cost"] == 0 and h["mev_cost"] == 0
    assert steps["pnl_hedge_cost"][0] == pytest.approx(-slip, rel=1e-12, abs=1e-12)
    assert s["pnl_hedge_cost"] == pytest.approx(-slip, rel=1e-12, abs=1e-12)
    assert steps["nav"][0] == pytest.approx(INITIAL - slip, rel=1e-14)
    np.testing.assert_allclose(book_nav(tables, IV), col(steps, "nav"), rtol=1e-12)


def test_cpmm_large_buy_fills_half_the_reserve():
    liquidity = 50_000.0  # x = 250 units: at most 125 per hedge, far less than the ~516 wanted
    strat = strategy(
        hedge={"policy": "every_trade"},
        slippage={"model": "cpmm", "liquidity_usd": liquidity, "fee_bps": 5.0},
    )
    tables, _ = run(strat, market([S0, S0]), flow(SHORT_CALLS))
    h = tables.hedges.row(0, named=True)
    reserve_units = liquidity / (2 * S0)
    assert h["qty"] == pytest.approx(0.5 * reserve_units, rel=1e-12)
    # paid = y * (x/2) / (x/2) / (1 - fee) = y / (1 - fee) for x/2 units: price 2S / (1 - fee)
    assert h["exec_price"] == pytest.approx(2 * S0 / (1 - CPMM_FEE), rel=1e-12)
    assert h["slippage_cost"] == pytest.approx(h["qty"] * (h["exec_price"] - S0), rel=1e-12)
    net = tables.steps["net_delta"][0]
    assert net == pytest.approx(tables.steps["book_delta"][0] + h["qty"], rel=1e-12)
    assert net < -300  # the rest stays unhedged


def test_gas_and_mev_costs():
    gas, mev_bps, mev_min = 3.0, 20.0, 30_000.0
    strat = strategy(
        hedge={"policy": "every_trade"},
        slippage={
            "model": "fixed_bps",
            "bps": 2.0,
            "gas_usd": gas,
            "mev_bps": mev_bps,
            "mev_min_notional": mev_min,
        },
    )
    # tick 0: hedge ~516 units (51.6k > 30k: MEV); tick 2: ~ -52 units (5.2k: no MEV)
    tables, s = run(
        strat, market([S0, S0, S0]), flow(SHORT_CALLS, (2, WEEK, 100.0, "C", -1, 100.0))
    )
    hedges, steps = tables.hedges, tables.steps
    assert hedges.height == 2
    notional = np.abs(col(hedges, "qty") * col(hedges, "spot"))
    assert notional[0] > mev_min > notional[1]
    np.testing.assert_allclose(col(hedges, "gas_cost"), gas)
    assert hedges["mev_cost"][0] == pytest.approx(mev_bps * 1e-4 * notional[0], rel=1e-12)
    assert hedges["mev_cost"][1] == 0.0
    np.testing.assert_allclose(col(hedges, "slippage_cost"), notional * 2e-4, rtol=1e-12)
    total = col(hedges, "slippage_cost") + col(hedges, "gas_cost") + col(hedges, "mev_cost")
    per_tick = col(steps, "pnl_hedge_cost")
    np.testing.assert_allclose(per_tick[[0, 2]], -total, rtol=1e-12)
    assert per_tick[1] == 0.0
    assert s["pnl_hedge_cost"] == pytest.approx(-total.sum(), rel=1e-12)
    np.testing.assert_allclose(book_nav(tables, IV), col(steps, "nav"), rtol=1e-12)


# --- collateral -------------------------------------------------------------------------------


def test_full_collateral_requirement_per_position():
    tables, _ = run(
        strategy(),
        market([100, 105]),
        flow(
            (0, WEEK, 110, "C", +1, 10),  # pool short calls: one unit of spot each
            (0, WEEK, 90, "P", +1, 5),  # pool short puts: the strike each
            (0, WEEK, 100, "C", -1, 4),  # pool long calls: their mark
        ),
    )
    req = col(tables.steps, "collateral_required")
    assert req[0] == pytest.approx(10 * 100 + 5 * 90 + 4 * bs("C", 100, 100, WEEK, IV), rel=1e-12)
    assert req[1] == pytest.approx(
        10 * 105 + 5 * 90 + 4 * bs("C", 105, 100, WEEK - 1, IV), rel=1e-12
    )
    util = col(tables.steps, "utilisation")
    np.testing.assert_allclose(util, req / col(tables.steps, "nav"), rtol=1e-14)


def test_full_collateral_partial_fill_to_the_cap_and_rejects():
    # NAV 100k, max_utilisation 0.5: 50k of collateral; no fees so NAV is exactly 100k at tick 0.
    strat = strategy(pool={"max_utilisation": 0.5, "initial_capital": 100_000.0})
    tables, s = run(
        strat,
        market([100, 125]),
        flow(
            (0, WEEK, 100, "C", +1, 200),  # 20k: fits
            (0, WEEK, 105, "C", +1, 500),  # 30k left at 100 a call: 300 of 500
            (0, WEEK, 105, "C", +1, 10),  # nothing left
            (0, WEEK, 100, "C", -1, 50),  # buy-back: always fills, frees 5k
            (0, WEEK, 80, "P", +1, 100),  # 5k at strike 80: 62.5 puts
            (1, WEEK, 105, "C", -1, 20),  # over the cap after the rally: reducing still fills
            (1, WEEK, 105, "C", +1, 1),  # ... but adding does not
        ),
    )
    trades, steps = tables.trades, tables.steps
    assert col(trades, "filled").tolist() == [200, 300, 0, 50, 62.5, 20, 0]
    assert trades["reject_reason"].to_list() == [
        "",
        "utilisation",
        "utilisation",
        "",
        "utilisation",
        "",
        "utilisation",
    ]
    assert steps["collateral_required"][0] == pytest.approx(50_000, rel=1e-14)
    assert steps["utilisation"][0] == pytest.approx(0.5, rel=1e-14)
    # After the rally (150 + 280 short calls at 125, 62.5 short puts) the pool is over the cap.
    assert steps["collateral_required"][1] == pytest.approx(430 * 125 + 62.5 * 80, rel=1e-14)
    assert steps["utilisation"][1] > 0.5
    assert s["n_rejected"] == 2 and s["n_partial"] == 2


def dynamic_requirement(positions, units, spot, multiplier, stress_spot, stress_vol, vol=IV):
    """margin_multiplier x worst loss over the stress grid; positions = [(kind, K, h_left, qty)]."""
    worst = 0.0
    for ds in SPOT_SHOCKS:
        for dv in VOL_SHOCKS:
            s_shock = spot * (1 + ds * stress_spot)
            v_shock = vol * (1 + dv * stress_vol)
            pnl = units * spot * ds * stress_spot
            for kind, strike, left, qty in positions:
                pnl += qty * (
                    bs(kind, s_shock, strike, left, v_shock) - bs(kind, spot, strike, left, vol)
                )
            worst = max(worst, -pnl)
    return multiplier * worst


DYNAMIC = {
    "collateral": "dynamic",
    "margin_multiplier": 1.5,
    "stress_spot": 0.3,
    "stress_vol": 0.5,
    "max_utilisation": 0.8,
}


@pytest.mark.parametrize("policy", ["none", "every_trade"])
def test_dynamic_requirement_is_worst_stress_loss(policy):
    strat = strategy(pool=DYNAMIC, hedge={"policy": policy})
    book = flow((0, WEEK, 100, "C", +1, 100), (0, WEEK, 90, "P", -1, 40))
    tables, _ = run(strat, market([100, 104]), book)
    steps = tables.steps
    for t, spot in enumerate([100, 104]):
        positions = [("C", 100, WEEK - t, -100.0), ("P", 90, WEEK - t, 40.0)]
        want = dynamic_requirement(positions, steps["hedge_units"][t], spot, 1.5, 0.3, 0.5)
        assert steps["collateral_required"][t] == pytest.approx(want, rel=1e-12)


def test_dynamic_hedged_book_needs_less_collateral():
    book = flow((0, WEEK, 100, "C", +1, 100))
    unhedged, _ = run(strategy(pool=DYNAMIC), market([100, 100]), book)
    hedged, _ = run(
        strategy(pool=DYNAMIC, hedge={"policy": "every_trade"}), market([100, 100]), book
    )
    req_u = unhedged.steps["collateral_required"][0]
    req_h = hedged.steps["collateral_required"][0]
    assert hedged.steps["hedge_units"][0] > 0
    assert req_h < 0.5 * req_u


def dynamic_pool(**changes):
    keys = {
        "collateral": "dynamic",
        "margin_multiplier": 1.5,
        "stress_spot": 0.3,
        "stress_vol": 0.5,
        "max_utilisation": 0.5,
        "liquidation_threshold": 1.0,
        "initial_capital": 100_000.0,
    }
    return strategy(pool=keys | changes)


def test_dynamic_partial_fill_exactly_to_the_cap():
    tables, _ = run(dynamic_pool(), market([100, 100]), flow((0, WEEK, 100, "C", +1, 5000)))
    # Worst stress loss per short call: spot +30 %, vol x1.5. Budget 0.5 x 100k = 50k.
    per_contract = dynamic_requirement([("C", 100, WEEK, -1.0)], 0.0, 100, 1.5, 0.3, 0.5)
    t = tables.trades.row(0, named=True)
    assert t["filled"] == pytest.approx(50_000 / per_contract, rel=1e-9)
    assert t["reject_reason"] == "utilisation"
    assert tables.steps["utilisation"][0] == pytest.approx(0.5, rel=1e-12)
    assert tables.steps["utilisation"][0] <= 0.5 + 1e-12


def test_dynamic_cap_applies_to_each_row_of_a_tick():
    # Tick 1: the rally leaves the pool over max_utilisation (0.5) but under the liquidation
    # threshold (1.0). The pool buys back 100 calls (always allowed) and is then below its old
    # requirement; a new sale may only use what is left under the cap, as in full mode.
    flw = flow(
        (0, WEEK, 100, "C", +1, 1500),
        (1, WEEK, 100, "C", -1, 100),
        (1, WEEK, 100, "C", +1, 100),
    )
    tables, _ = run(dynamic_pool(margin_multiplier=1.0), market([100, 108, 108]), flw)
    steps, trades = tables.steps, tables.trades
    nav1 = steps["nav"][1]  # no fees: NAV does not move within the tick
    before = dynamic_requirement([("C", 100, WEEK - 1, -1500.0)], 0.0, 108, 1.0, 0.3, 0.5)
    assert before > 0.5 * nav1  # over the cap before trading
    per_contract = before / 1500.0  # one worst scenario (spot up, vol up) for any short size
    assert trades["filled"].to_list()[:2] == [1500.0, 100.0]
    room = 0.5 * nav1 / per_contract - 1400.0
    assert 0 < room < 100
    assert trades["filled"][2] == pytest.approx(room, rel=1e-6)
    assert steps["utilisation"][1] <= 0.5 + 1e-12


def test_dynamic_liquidation_buys_back_to_max_utilisation():
    penalty, max_util = 0.05, 0.5
    strat = strategy(
        pool={
            "collateral": "dynamic",
            "margin_multiplier": 1.0,
            "stress_spot": 0.3,
            "stress_vol": 0.5,
            "max_utilisation": max_util,
            "liquidation_threshold": 0.8,
            "liquidation_penalty": penalty,
            "initial_capital": 100_000.0,
        }
    )
    spots = [100, 100, 125, 126]
    tables, s = run(strat, market(spots), flow((0, WEEK, 100, "C", +1, 1500)))
    steps, series, trades = tables.steps, tables.series, tables.trades
    assert trades["filled"][0] == 1500  # fits: ~29 a contract at 100 against a 50k budget
    liq = col(steps, "pnl_liquidation")
    assert liq[0] == liq[1] == liq[3] == 0.0 and liq[2] < 0
    bought = series["volume"][0] - 1500
    assert 0 < bought < 1500
    mark = bs("C", 125, 100, WEEK - 2, IV)
    assert liq[2] == pytest.approx(-penalty * mark * bought, rel=1e-12)
    assert series["pnl_liquidation"][0] == pytest.approx(liq[2], rel=1e-12)
    assert steps["cash"][2] == pytest.approx(steps["cash"][1] - bought * mark * (1 + penalty))
    # Before liquidating the pool was past the threshold; after, exactly at max_utilisation.
    nav_before = steps["nav"][2] - liq[2]
    req_before = dynamic_requirement([("C", 100, WEEK - 2, -1500.0)], 0.0, 125, 1.0, 0.3, 0.5)
    assert req_before > 0.8 * nav_before
    left = -(1500 - bought)
    req_after = dynamic_requirement([("C", 100, WEEK - 2, left)], 0.0, 125, 1.0, 0.3, 0.5)
    assert steps["collateral_required"][2] == pytest.approx(req_after, rel=1e-9)
    assert steps["utilisation"][2] <= max_util + 1e-12
    assert steps["utilisation"][2] == pytest.approx(max_util, rel=1e-9)
    assert steps["book_delta"][2] == pytest.approx(
        left * bs_greeks("C", 125, 100, WEEK - 2, IV).delta
    )
    assert s["pnl_liquidation"] == pytest.approx(liq[2], rel=1e-12)


def test_dynamic_liquidation_restores_max_utilisation_of_a_hedged_book():
    # The pool sells calls on four ticks and delta-hedges each fill with long spot; each hedge
    # frees budget for the next sale. Then spot falls 20 %: the calls are nearly worthless and the
    # 2000-unit long hedge drives the worst scenario (spot -30 %). Liquidation must unwind part of
    # the hedge (recorded as a hedge with reason "liquidation"), not stop for want of shorts.
    strat = strategy(
        pool={
            "collateral": "dynamic",
            "margin_multiplier": 1.0,
            "stress_spot": 0.3,
            "stress_vol": 0.5,
            "max_utilisation": 0.5,
            "liquidation_threshold": 0.6,
            "liquidation_penalty": 0.05,
        },
        hedge={"policy": "every_trade"},
    )
    flw = flow(*[(k, WEEK, 100, "C", +1, 3000) for k in range(4)])
    tables, _ = run(strat, market([100, 100, 100, 100, 80, 80]), flw)
    steps = tables.steps
    assert steps["hedge_units"][3] > 2000
    util = col(steps, "utilisation")
    assert util[4] <= 0.5 + 1e-9  # liquidated back to max_utilisation
    assert util[5] <= 0.6  # and never left above the liquidation threshold
    unwound = tables.hedges.filter(pl.col("reason") == "liquidation")
    assert unwound.height == 1 and unwound["qty"][0] < 0


# --- settlement -------------------------------------------------------------------------------


@pytest.mark.parametrize("side", [+1, -1])  # pool short / pool long
@pytest.mark.parametrize("expiry_hour", [3.0, 2.5])  # on a tick, or between ticks 2 and 3
@pytest.mark.parametrize(
    "kind, spot_at_expiry, intrinsic",
    [("C", 107.0, 7.0), ("C", 95.0, 0.0), ("P", 93.0, 7.0), ("P", 105.0, 0.0)],
)
def test_settlement_at_first_tick_at_or_after_expiry(
    kind, spot_at_expiry, intrinsic, expiry_hour, side
):
    strat = strategy(pricing={"base_fee": 0.01})
    spots = [100, 102, 98, spot_at_expiry, 80, 130]
    tables, s = run(strat, market(spots), flow((0, expiry_hour, 100, kind, side, 10)))
    steps, trades, series = tables.steps, tables.trades, tables.series
    initial = INITIAL
    qty = -side * 10.0
    mark0 = bs(kind, 100, 100, expiry_hour, IV)
    fee = 10 * 0.01 * mark0
    assert trades["mark"][0] == pytest.approx(mark0, rel=1e-12)
    premium = trades["premium"][0]
    assert premium == pytest.approx(side * 10 * mark0 + fee, rel=1e-12)
    assert col(steps, "n_live_series").tolist() == [1, 1, 1, 0, 0, 0]
    cash = col(steps, "cash")
    np.testing.assert_allclose(cash[:3], initial + premium, rtol=1e-15)
    settled = initial + premium + qty * intrinsic  # the short pays, the long receives
    assert cash[3] == pytest.approx(settled, rel=1e-14)
    np.testing.assert_allclose(cash[3:], cash[3], rtol=0)
    np.testing.assert_allclose(col(steps, "nav")[3:], cash[3], rtol=1e-15)
    assert (steps["pnl_total"][4:] == 0).all()  # nothing left to move after settlement
    assert (steps["book_delta"][3:] == 0).all()
    # Lifetime PnL of the series = (payout - premium) from the pool's side, plus the fee.
    row = series.row(0, named=True)
    assert row["fees"] == pytest.approx(fee, rel=1e-12)
    assert row["pnl_total"] == pytest.approx(qty * (intrinsic - mark0) + fee, abs=1e-9)
    assert s["final_nav"] == pytest.approx(settled, rel=1e-14)
    np.testing.assert_allclose(book_nav(tables, IV), col(steps, "nav"), rtol=1e-13)


# --- insolvency -------------------------------------------------------------------------------


def test_insolvency_flags_rejects_and_keeps_marking():
    # Full collateral cannot go insolvent on short calls; a leveraged dynamic pool that never
    # liquidates can.
    leveraged = {"collateral": "dynamic", "max_utilisation": 10.0, "liquidation_threshold": 100.0}
    spots = [100, 110, 130, 160, 150, 170]
    tables, s = run(
        strategy(pool=leveraged | {"initial_capital": 100_000.0}),
        market(spots),
        flow(
            (0, WEEK, 100, "C", +1, 9000),  # a stress loss of about 10x the 100k pool
            (3, WEEK, 100, "C", +1, 1),
            (4, WEEK, 120, "P", -1, 5),
        ),
    )
    steps, trades = tables.steps, tables.trades
    nav = col(steps, "nav")
    first = int(np.argmax(nav <= 0))
    assert nav[first] <= 0 and (nav[:first] > 0).all() and first == 2
    assert s["insolvent"] is True
    assert s["insolvency_ts"] == T0 + first * HOUR
    assert col(steps, "insolvent").tolist() == [False, False, True, True, True, True]
    assert trades["filled"].to_list() == [9000, 0, 0]
    assert trades["reject_reason"].to_list() == ["", "insolvent", "insolvent"]
    assert (trades["fee"][1:] == 0).all() and (trades["premium"][1:] == 0).all()
    assert s["bad_debt"] == pytest.approx(-nav.min(), rel=1e-15)
    assert s["bad_debt"] == pytest.approx(-nav[5], rel=1e-15)
    # Marking continues after insolvency: the short calls keep losing and gaining.
    assert nav[4] > nav[3] > nav[5]
    assert (col(steps, "pnl_delta")[3:] != 0).all()
    np.testing.assert_allclose(book_nav(tables, IV), nav, rtol=1e-12)


def test_solvent_pool_reports_no_insolvency():
    _, s = run(strategy(), market([100, 101]), flow((0, WEEK, 100, "C", +1, 10)))
    assert s["insolvent"] is False and s["insolvency_ts"] is None and s["bad_debt"] == 0.0


# --- fees -------------------------------------------------------------------------------------


def test_base_and_spot_fee_per_contract():
    strat = strategy(pricing={"base_fee": 0.01, "spot_fee": 0.0005})
    tables, s = run(
        strat, market([100, 100]), flow((0, WEEK, 105, "C", +1, 10), (0, WEEK, 95, "P", -1, 4))
    )
    trades = tables.trades
    mc, mp = bs("C", 100, 105, WEEK, IV), bs("P", 100, 95, WEEK, IV)
    fee_c = 10 * (0.01 * mc + 0.0005 * 100)
    fee_p = 4 * (0.01 * mp + 0.0005 * 100)
    np.testing.assert_allclose(col(trades, "mark"), [mc, mp], rtol=1e-12)
    np.testing.assert_allclose(col(trades, "fee"), [fee_c, fee_p], rtol=1e-12)
    np.testing.assert_allclose(
        col(trades, "premium"), [10 * mc + fee_c, -4 * mp + fee_p], rtol=1e-12
    )
    assert tables.steps["pnl_fees"][0] == pytest.approx(fee_c + fee_p, rel=1e-12)
    assert tables.steps["nav"][0] == pytest.approx(INITIAL + fee_c + fee_p, rel=1e-14)
    np.testing.assert_allclose(col(tables.series.sort("kind"), "fees"), [fee_c, fee_p])


def test_vega_fee_only_when_net_vega_grows():
    vega_fee, base_fee = 0.5, 0.01
    strat = strategy(pricing={"base_fee": base_fee, "vega_fee": vega_fee})
    rows = [
        (0, WEEK, 100, "C", +1, 100),  # pool short 100 calls: |vega| 0 -> 100v, grows
        (0, WEEK, 100, "C", -1, 30),  # buys 30 back: |vega| shrinks, no vega fee
        (0, WEEK, 100, "C", -1, 250),  # buys 250: -70v -> +180v, grows again
        (0, WEEK, 100, "P", +1, 10),  # sells 10 puts: +180v -> +170v, shrinks
    ]
    tables, _ = run(strat, market([100, 100]), flow(*rows))
    fees = col(tables.trades, "fee")
    vc = bs_greeks("C", 100, 100, WEEK, IV).vega  # = the put's vega (same strike, no rate)
    m_c, m_p = bs("C", 100, 100, WEEK, IV), bs("P", 100, 100, WEEK, IV)
    nav = INITIAL
    base = [base_fee * m * n for m, n in [(m_c, 100), (m_c, 30), (m_c, 250), (m_p, 10)]]
    want0 = base[0] + vega_fee * (100 * vc) / nav * (100 * vc)
    assert fees[0] == pytest.approx(want0, rel=1e-12)
    nav += fees[0]
    assert fees[1] == pytest.approx(base[1], rel=1e-12)  # risk-reducing: no vega fee
    nav += fees[1]
    want2 = base[2] + vega_fee * (180 * vc) / nav * (250 * vc)
    assert fees[2] == pytest.approx(want2, rel=1e-12)
    assert fees[3] == pytest.approx(base[3], rel=1e-12)
    assert want0 - base[0] > 0.1 * base[0]  # the vega term is a visible part of the fee


def test_min_fee_and_seller_never_pays_more_than_the_mark():
    strat = strategy(pricing={"base_fee": 0.01, "spot_fee": 0.0005, "min_fee": 0.5})
    rows = [
        (0, WEEK, 150, "C", +1, 10),  # far OTM, mark ~1e-5: the buyer pays the minimum
        (0, WEEK, 150, "C", -1, 10),  # seller of the same: capped at the (tiny) mark
        (0, WEEK, 100, "C", -1, 10),  # seller of an ATM call: min fee 5 < fee < mark
        (0, WEEK, 100, "C", +1, 2),  # buyer of ATM: 2 * (0.01 mark + 0.05) < 1: min fee
    ]
    tables, _ = run(strat, market([100, 100]), flow(*rows))
    t = tables.trades
    fee, mark, prem = col(t, "fee"), col(t, "mark"), col(t, "premium")
    m_otm, m_atm = bs("C", 100, 150, WEEK, IV), bs("C", 100, 100, WEEK, IV)
    assert 0 < m_otm < 1e-3
    assert fee[0] == pytest.approx(10 * 0.5)
    assert fee[1] == pytest.approx(10 * m_otm, rel=1e-12) and prem[1] == pytest.approx(0, abs=1e-12)
    want_atm = 10 * max(0.01 * m_atm + 0.05, 0.5)
    assert fee[2] == pytest.approx(min(want_atm, 10 * m_atm), rel=1e-12)
    assert fee[3] == pytest.approx(2 * 0.5)
    sells = t["side"].to_numpy() < 0
    assert (fee[sells] <= mark[sells] * col(t, "filled")[sells] * (1 + 1e-15)).all()
    assert (prem[sells] <= 0).all()  # a seller is never asked to pay


# --- perp funding and idle yield ----------------------------------------------------------------


def test_perp_funding_on_the_hedge():
    spots = [100, 101, 99, 102, 100]
    funding = [0.1, 0.2, -0.05, 0.3, 0.0]
    rows = (SHORT_CALLS, (2, WEEK, 100, "C", -1, 300))
    perp, sp = run(
        strategy(hedge={"policy": "every_trade", "instrument": "perp"}),
        market(spots, funding=funding),
        flow(*rows),
    )
    spot_run, ss = run(
        strategy(hedge={"policy": "every_trade", "instrument": "spot"}),
        market(spots, funding=funding),
        flow(*rows),
    )
    units = col(perp.steps, "hedge_units")
    assert units[0] > 500
    np.testing.assert_allclose(units, col(spot_run.steps, "hedge_units"), rtol=1e-14)
    dt_year = 1 / YEAR_HOURS
    want = np.concatenate(
        [[0.0], -units[:-1] * np.array(spots[:-1]) * np.array(funding[:-1]) * dt_year]
    )
    np.testing.assert_allclose(col(perp.steps, "pnl_funding"), want, rtol=1e-12, atol=1e-15)
    assert sp["pnl_funding"] == pytest.approx(want.sum(), rel=1e-12)
    # Spot hedges pay no funding; otherwise the two pools are the same.
    assert (spot_run.steps["pnl_funding"] == 0).all() and ss["pnl_funding"] == 0
    np.testing.assert_allclose(
        col(perp.steps, "nav") - col(spot_run.steps, "nav"), np.cumsum(want), atol=1e-9
    )
    # A perp hedge ties up no cash: buying it leaves cash at initial + premium.
    assert perp.steps["cash"][0] == pytest.approx(INITIAL + perp.trades["premium"][0], rel=1e-15)


def test_idle_yield_on_free_capital():
    y = 0.05
    dt_year = 1 / YEAR_HOURS
    # No flow: the whole NAV is free and compounds tick by tick.
    empty, s = run(strategy(pool={"idle_yield": y}), market([100, 120, 80, 100]), flow())
    nav = col(empty.steps, "nav")
    np.testing.assert_allclose(nav, INITIAL * (1 + y * dt_year) ** np.arange(4), rtol=1e-14)
    assert s["pnl_interest"] == pytest.approx(nav[-1] - INITIAL, abs=1e-9)
    # With a book: interest on the free cash of the tick before, cash less what it locks (a
    # short call its spot, a short put its strike), premiums included.
    tables, _ = run(
        strategy(pool={"idle_yield": y}),
        market([100, 102, 99, 101]),
        flow((0, WEEK, 100, "C", +1, 300), (2, WEEK, 90, "P", +1, 200)),
    )
    steps = tables.steps
    free = col(steps, "free_cash")
    locked = np.array([300 * 100, 300 * 102, 300 * 99 + 200 * 90, 300 * 101 + 200 * 90])
    np.testing.assert_allclose(free, col(steps, "cash") - locked, rtol=1e-14)
    assert (free > 0).all() and (free < col(steps, "nav")).all()
    want = np.concatenate([[0.0], y * free[:-1] * dt_year])
    np.testing.assert_allclose(col(steps, "pnl_interest"), want, rtol=1e-12)


# --- multi-path -------------------------------------------------------------------------------


def test_multi_path_equals_each_path_alone():
    strat = strategy(
        pricing={"base_fee": 0.01, "spot_fee": 0.0005},
        hedge={"policy": "threshold", "threshold": 0.02},
        slippage={"model": "fixed_bps", "bps": 5.0},
        pool={"idle_yield": 0.03, "max_utilisation": 1.0},
    )
    paths = {  # unequal lengths and non-consecutive ids
        0: [100, 101, 103, 102, 99, 98, 100],
        3: [100, 97, 95, 96, 99, 104, 106, 107],
        7: [100, 100.5, 99.5, 100, 101],
    }
    mkt = pl.concat([market(v, path_id=k) for k, v in paths.items()])
    flw = flow(
        SHORT_CALLS,
        (1, 48, 95, "P", +1, 400),
        (2, WEEK, 110, "C", -1, 150, 3),  # path 3 only
        (3, 48, 100, "P", -1, 100, 7),  # path 7 only
        (4, WEEK, 100, "C", -1, 300),
    )
    together, summary = simulate_frames(strat, mkt, flw)
    assert_reconciles(together, summary)
    assert summary.height == 3
    for k in paths:
        alone, s_alone = simulate_frames(strat, mkt.filter(pl.col("path_id") == k), flw)
        assert_reconciles(alone, s_alone)
        for name in ("steps", "trades", "hedges", "series"):
            mine = getattr(together, name).filter(pl.col("path_id") == k)
            assert mine.height > 0
            assert mine.equals(getattr(alone, name)), name
        # Summary metrics: the same, up to the last bit of a vectorised division.
        row = summary.filter(pl.col("path_id") == k).row(0, named=True)
        for name, value in s_alone.row(0, named=True).items():
            if name == "n_paths":
                continue
            if isinstance(value, float):
                assert row[name] == pytest.approx(value, rel=1e-12, abs=1e-12), name
            else:
                assert row[name] == value, name
    n_trades = summary.sort("path_id")["n_trades"].to_list()
    assert n_trades == [3, 4, 4]
    finals = summary["final_nav"].to_list()
    assert len(set(finals)) == 3  # the paths really differ
