"""The balance sheet under the ledger: collateral that backs what the pool wrote, borrowing that
costs, LP exits that charge the leaver, liquidation that helps, impact that is paid for.

Each test is one defect of the former engine, on a small hand-built market, with the numbers it
showed before the fix in its docstring.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from scenarios import assert_reconciles, hourly_flow, hourly_lp, hourly_market

from backtest.pricing import greeks, price
from backtest.runner import simulate_frames

YEAR_HOURS = 365.0 * 24.0
WEEK = 7 * 24
QUIET = {  # fees, costs and hedging off; full collateral
    "pool": {"initial_capital": 1_000_000.0, "collateral": "full", "max_utilisation": 0.8},
    "pricing": {"base_fee": 0.0, "spot_fee": 0.0},
    "hedge": {"policy": "none"},
    "slippage": {"model": "none"},
}


def pool(**sections) -> dict:
    out = {name: dict(keys) for name, keys in QUIET.items()}
    for name, keys in sections.items():
        out.setdefault(name, {}).update(keys)
    return out


def run(strategy, market, flow, lp=None):
    tables, summary = simulate_frames(strategy, market, flow, lp_flows=lp)
    assert_reconciles(tables, summary)
    return tables, summary.row(0, named=True)


# --- 1. the last LP out closes the book ------------------------------------------------------


def test_last_lp_out_closes_every_position_and_leaves_nav_zero():
    """Before: all LPs paid 1.0 M at hour 2, one series stayed live with 31.9 k of cash against a
    400 k requirement, and a +30 % move made the pool insolvent with 92 k of bad debt."""
    spots = [2000, 2000, 2000, 2300, 2600, 2600]
    tables, s = run(
        pool(pricing={"base_fee": 0.01}, hedge={"policy": "every_trade"}),
        hourly_market(spots),
        hourly_flow((0, WEEK, 2000, "C", +1, 200)),
        hourly_lp((2, -5_000_000.0)),  # more than the pool holds: everything
    )
    steps = tables.steps
    assert steps["shares"][2] == 0.0 and steps["n_live_series"][2] == 0
    assert steps["hedge_units"][2] == pytest.approx(0.0, abs=1e-9)
    assert (steps["nav"][2:] == 0.0).all() and (steps["cash"][2:] == 0.0).all()
    paid = -steps["lp_flow"][2]
    assert paid == pytest.approx(steps["nav"][1] + steps["pnl_total"][2], rel=1e-12)
    assert not steps["insolvent"].any() and not s["insolvent"] and s["bad_debt"] == 0.0
    lp = tables.lp.filter(pl.col("event") == "withdrawal")
    assert lp.height == 1 and lp["amount"][0] == pytest.approx(-paid, rel=1e-12)
    assert lp["unwind_cost"][0] > 0  # the buyback penalty, borne by the leaver
    closes = tables.liquidations
    assert closes["reason"].to_list() == ["withdrawal"] and closes["qty"][0] == 200.0


# --- 2. leavers pay for the unwind they cause ----------------------------------------------


def test_leaver_pays_the_unwind_and_stayers_nav_per_share_is_unchanged():
    """Before: the forced buyback (mark + 2 %) was charged to everyone: the leaver got 1.000089
    per share and the LPs who stayed were left at 0.998810."""
    market = hourly_market([2000.0] * 8, iv=0.6)
    flow = hourly_flow((0, 48, 2000, "C", +1, 390))  # 780 k locked of 1 M: at the cap
    strat = pool(pool={"liquidation_penalty": 0.02})
    alone, _ = run(strat, market, flow)
    tables, _ = run(strat, market, flow, hourly_lp((4, -500_000.0)))
    steps, ref = tables.steps, alone.steps
    assert steps["pnl_liquidation"][4] < 0  # the withdrawal forced a buyback
    np.testing.assert_allclose(steps["nav_per_share"][4], ref["nav_per_share"][4], rtol=1e-12)
    event = tables.lp.filter(pl.col("event") == "withdrawal").row(0, named=True)
    assert event["unwind_cost"] == pytest.approx(-steps["pnl_liquidation"][4], rel=1e-12)
    value = event["shares"] * -1 * ref["nav_per_share"][4]  # shares burned are negative
    assert -event["amount"] == pytest.approx(value - event["unwind_cost"], rel=1e-12)
    # It closed only what the payout forced: the pool is left within NAV, not max_utilisation.
    assert 0.8 < steps["utilisation"][4] <= 1.0 + 1e-12


# --- 3. full collateral is full ------------------------------------------------------------


def test_full_collateral_holds_at_every_tick_and_never_borrows():
    """Before: 400 short 2000-strike calls on a 1 M pool, spot 2000 -> 3000: requirement 1.2 M
    against NAV 662 k (utilisation 1.81); with the 2 % hedge, cash -473 k, utilisation 7.34."""
    spots = np.linspace(2000, 3000, 11)
    for policy in ("none", "threshold"):
        tables, s = run(
            pool(pool={"max_utilisation": 1.0}, hedge={"policy": policy, "threshold": 0.02}),
            hourly_market(spots),
            hourly_flow((0, WEEK, 2000, "C", +1, 400)),
        )
        steps = tables.steps
        assert (steps["cash"] >= 0).all() and (steps["free_cash"] >= -1e-9).all()
        assert (steps["utilisation"] <= 1.0 + 1e-12).all()
        assert (steps["collateral_gap"] == 0).all()
        assert s["pnl_liquidation"] < 0  # kept full by buying calls back as spot rose
        assert tables.liquidations["reason"].unique().to_list() == ["liquidation"]


def test_short_spot_hedge_locks_its_value_in_cash():
    """A short put is hedged by selling spot: each borrowed unit locks its spot value."""
    tables, _ = run(
        pool(pool={"max_utilisation": 1.0}, hedge={"policy": "every_trade"}),
        hourly_market([2000, 1900]),
        hourly_flow((0, WEEK, 2000, "P", +1, 100)),
    )
    steps = tables.steps
    units = steps["hedge_units"][0]
    assert units < -40
    assert steps["collateral_required"][0] == pytest.approx(100 * 2000 - units * 2000, rel=1e-12)
    locked = steps["cash"][0] - steps["free_cash"][0]
    assert locked == pytest.approx(100 * 2000 - units * 2000, rel=1e-12)


# --- 4. borrowing costs, and idle yield is paid on free cash only -----------------------


def test_borrowing_pays_borrow_rate_and_short_spot_pays_borrow_fee():
    """Before: interest accrued on NAV - requirement even with negative cash; short spot paid
    nothing to borrow."""
    y, r, fee = 0.05, 0.12, 0.08
    strat = pool(
        pool={"collateral": "dynamic", "max_utilisation": 3.0, "liquidation_threshold": 5.0},
        hedge={"policy": "every_trade", "borrow_fee": fee},
    )
    strat["pool"] |= {"idle_yield": y, "borrow_rate": r}
    spots = [2000, 2010, 1990, 2005, 2000]
    # The pool sells calls (hedge: buy spot, on credit) and puts (hedge: sell spot, borrowed).
    for kind, size in (("C", 1500), ("P", 300)):
        tables, s = run(strat, hourly_market(spots), hourly_flow((0, WEEK, 2000, kind, +1, size)))
        steps = tables.steps
        cash, units = steps["cash"].to_numpy(), steps["hedge_units"].to_numpy()
        free = steps["free_cash"].to_numpy()
        dt = 1 / YEAR_HOURS
        want_interest = (y * np.maximum(free[:-1], 0) - r * np.maximum(-cash[:-1], 0)) * dt
        np.testing.assert_allclose(steps["pnl_interest"][1:], want_interest, rtol=1e-12)
        want_funding = -fee * np.maximum(-units[:-1], 0) * np.array(spots[:-1]) * dt
        np.testing.assert_allclose(steps["pnl_funding"][1:], want_funding, rtol=1e-12)
        if kind == "C":
            assert (cash < 0).all() and s["pnl_interest"] < 0 and s["pnl_funding"] == 0
        else:
            assert (units < 0).all() and s["pnl_funding"] < 0


def test_max_leverage_caps_borrowing_and_rejects_flow_beyond_it():
    strat = pool(
        pool={"collateral": "dynamic", "max_utilisation": 3.0, "liquidation_threshold": 5.0},
        hedge={"policy": "every_trade"},
    )
    strat["pool"]["max_leverage"] = 1.5
    flow = hourly_flow((0, WEEK, 2000, "C", +1, 2000), (1, WEEK, 2000, "C", +1, 10))
    # The vol jump at hour 1 costs the short-vega pool equity: its leverage passes the cap.
    tables, _ = run(strat, hourly_market([2000, 2000, 2000], iv=[0.6, 0.9, 0.9]), flow)
    steps = tables.steps
    assert steps["leverage"][0] == pytest.approx(1.5, rel=1e-9)  # the hedge was cut there
    assert steps["hedge_units"][0] < -steps["book_delta"][0]  # ... short of a full hedge
    assert steps["leverage"][1] > 1.5
    assert tables.trades["reject_reason"].to_list() == ["", "leverage"]


# --- 5. liquidation never raises the requirement --------------------------------------------


def stale_hedge_state(units: float, calls: float):
    """Kernel state of a dynamic pool short `calls` ATM one-week calls with `units` of long
    hedge, at spot 2000 (scenario prices and requirement computed as the loop does)."""
    from backtest.config import build_strategy
    from backtest.kernel import collateral
    from backtest.kernel.loop import new_book
    from backtest.kernel.types import ACCOUNT_DTYPE, MarketPath, SeriesSpec
    from backtest.plan import params_from

    p = params_from(build_strategy(pool(pool={"collateral": "dynamic", "max_utilisation": 0.001})))
    week = 7 * 86_400 * 10**9
    mk = MarketPath(
        *(np.array([v]) for v in (0, 2000.0, 0.6, 0.0, 0.0)),
        np.array([-1]),
        np.zeros(0),  # no lending
        np.zeros(0),
        np.zeros(0),  # no oracle
        np.zeros(0, np.int64),  # no random hedge delay
    )
    mk = mk._replace(ts=np.array([0], np.int64))
    ser = SeriesSpec(
        np.array([week], np.int64),
        np.array([2000.0]),
        np.array([1.0]),
        np.zeros(1, np.int64),
        np.zeros(1, np.int64),
    )
    book = new_book(ser)
    book.qty[0], book.sigma[0] = -calls, 0.6
    book.price[0] = price("C", 2000.0, 2000.0, 7 / 365, 0.6)
    book.live[0] = 0
    account = np.zeros(1, ACCOUNT_DTYPE)
    account["n_live"], account["units"], account["nav"] = 1, units, 1e6
    acct = account[0]
    collateral.refresh(0, mk, ser, book, acct, p.pool, p.hedge)
    return (
        collateral,
        (0, mk, ser, book, acct, 0.0, 0.001, p.pool, p.hedge, p.slippage, p.mev),
        account,
    )


def test_liquidation_unwinds_the_hedge_by_the_amount_that_minimises_the_requirement():
    """Before: when no amount of a stale hedge fitted, all of it was unwound, though the
    requirement is convex in the amount (80-unit hedge: 33.4 k -> 60.0 k; 12.3 gave 27.5 k).
    Here 40 units hedge 60 short calls: 20.0 k now, 32.1 k with none, 15.2 k around 8 sold."""
    collateral, args, account = stale_hedge_state(units=40.0, calls=60.0)
    before = account[0]["requirement"]

    def after(x):
        return collateral._after(-1, x, False, args)

    grid = np.linspace(0, 40, 801)
    values = np.array([after(x) for x in grid])
    assert values.min() > 0  # nothing fits in 0.1 % of NAV
    budget = 0.001 * 1e6
    assert after(40.0) + budget > before  # unwinding all of it raises the requirement
    x = collateral._close_amount(-1, 40.0, False, *args)
    assert after(x) <= values.min() + 1e-6 and after(x) + budget < before
    assert 5 < x < 12


# --- 6. inventory impact: one snapshot a tick, each fill pays its own move -------------------


IMPACT = {"iv_impact": 0.05, "skew_impact": 0.0, "standard_size": 50.0, "impact_half_life": 24.0}


def test_fills_in_one_tick_are_priced_independently_of_their_order():
    """Before: a series first valued in trade() saw the impact of fills earlier in the tick."""
    market = hourly_market([2000.0] * 3)
    call = (1, WEEK, 2000, "C", +1, 100)
    put = (1, WEEK, 1900, "P", +1, 1)
    strat = pool(pricing=IMPACT)
    one, _ = run(strat, market, hourly_flow(call, put))
    other, _ = run(strat, market, hourly_flow(put, call))
    for name in ("iv", "mark", "impact", "premium"):
        a = one.trades.sort("kind")[name].to_numpy()
        b = other.trades.sort("kind")[name].to_numpy()
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("later_hours", [0, 1])
def test_a_round_trip_loses_at_least_its_fees(later_hours):
    """Before: buy 100, let the vol bump, sell back at the bumped vol: a free round trip."""
    strat = pool(pricing=IMPACT | {"base_fee": 0.002})
    flow = hourly_flow((1, WEEK, 2000, "C", +1, 100), (1 + later_hours, WEEK, 2000, "C", -1, 100))
    tables, _ = run(strat, hourly_market([2000.0] * 4), flow)
    trades = tables.trades
    trader_pnl = -float(trades["premium"].sum())  # what the trader paid, with the sign flipped
    fees = float(trades["fee"].sum())
    assert fees > 0 and trader_pnl <= -fees
    # The buyer paid at the vol half way through its own move, the seller likewise.
    move = 100 / 50 * 0.05
    assert trades["iv"][0] == pytest.approx(0.6 + move / 2, rel=1e-12)
    tau = (WEEK - 1) / YEAR_HOURS
    assert trades["mark"][0] == pytest.approx(price("C", 2000, 2000, tau, 0.6 + move / 2))
    assert trades["impact"][0] == pytest.approx(
        100 * (trades["mark"][0] - price("C", 2000, 2000, tau, 0.6)), rel=1e-12
    )


# --- 7. the vega part of a fee is the part charged ------------------------------------------


def test_fee_vega_never_exceeds_the_fee_charged():
    """Before: trades.fee_vega could exceed trades.fee (the seller's cap cut the fee only)."""
    strat = pool(pricing={"base_fee": 0.0, "vega_fee": 50.0})
    flow = hourly_flow((0, WEEK, 2400, "C", -1, 200))  # a seller of a far OTM call
    tables, _ = run(strat, hourly_market([2000.0, 2000.0]), flow)
    t = tables.trades.row(0, named=True)
    assert t["fee"] == pytest.approx(t["filled"] * t["mark"], rel=1e-12)  # capped
    assert 0 < t["fee_vega"] <= t["fee"]


# --- 8. theta stops at expiry ---------------------------------------------------------------


def test_theta_is_charged_only_up_to_expiry():
    """Before: an option with 7 h left across a 24 h data gap booked 24 h of theta (-271 USD
    against a 158 USD price); the residual absorbed the rest."""
    hours = [0, 1, 25, 26]
    tables, _ = run(
        pool(), hourly_market([2000.0] * 4, hours=hours), hourly_flow((1, 8, 2000, "C", +1, 1))
    )
    theta = greeks("C", 2000.0, 2000.0, 7 / YEAR_HOURS, 0.6).theta
    steps = tables.steps
    assert steps["pnl_theta"][2] == pytest.approx(-theta * 7 / YEAR_HOURS, rel=1e-12)
    assert steps["n_live_series"][2] == 0  # settled at the first tick after expiry
    # The linear theta of an ATM option covers half its decay (price ~ sqrt(tau)); never more.
    premium = tables.trades["mark"][0]
    assert 0 < steps["pnl_theta"][2] < premium
    assert steps["pnl_theta"][2] + steps["pnl_residual"][2] == pytest.approx(premium)


# --- 9. no money vanishes around an empty pool ----------------------------------------------


def test_a_deposit_into_an_emptied_pool_restarts_it():
    """Before: a deposit into an emptied pool was dropped with no record, and the empty pool was
    flagged insolvent with bad_debt -0.0."""
    lp = hourly_lp((1, -2_000_000.0), (3, 500_000.0))
    tables, s = run(pool(), hourly_market([2000.0] * 5), hourly_flow(), lp)
    steps = tables.steps
    assert steps["nav"].to_list() == [1e6, 0.0, 0.0, 5e5, 5e5]
    assert steps["shares"].to_list() == [1e6, 0.0, 0.0, 5e5, 5e5]
    assert steps["lp_flow"].to_list() == [0.0, -1e6, 0.0, 5e5, 0.0]
    assert not s["insolvent"] and str(s["bad_debt"]) == "0.0"
    assert tables.lp["event"].to_list() == ["request", "withdrawal", "deposit"]
    assert tables.lp["nav_per_share"][-1] == 1.0
