"""LP exits through a venue that cannot take the whole unwind in one tick.

The pool below holds a delta-hedged book of short calls, its hedge bought on a thin constant-
product venue through a 0.2 % slippage limit: one fill moves at most ~0.19 ETH, so an exit's
unwind needs more fills than a tick allows (64). Before the fix, the leaver was paid NAV
counting the unsold units at spot: on `sandwiched-hedges` with `mev.max_slippage=0.001` and
everything withdrawn on 2022-08-01 07:00, 380 ETH stayed in a book with no shares and cash
-640 k; the next tick sold them, NAV went to -33 k, the pool was insolvent for the rest of the
year, and a later 5 M deposit absorbed the old deficit (NAV per share 0.993 after a day).
"""

from __future__ import annotations

import polars as pl
import pytest
from scenarios import assert_reconciles, hourly_flow, hourly_lp, hourly_market

from backtest.runner import simulate_frames

EXIT = 150  # hour of the withdrawal request (paid at once: no delay)
THIN = {
    "pool": {"initial_capital": 1_000_000.0, "collateral": "full", "max_utilisation": 0.8},
    "pricing": {"base_fee": 0.0, "spot_fee": 0.0},
    "hedge": {"policy": "threshold", "threshold": 0.0},
    "slippage": {"model": "cpmm", "liquidity_usd": 500_000.0, "fee_bps": 5.0},
    "mev": {"model": "sandwich", "max_slippage": 0.002},
}
MARKET = hourly_market([2000.0] * 200, iv=0.6)
CALLS = (0, 24 * 14, 2000, "C", +1, 40)  # 40 short calls: ~20 ETH of hedge, ~107 fills


def run(lp, *extra_flow):
    tables, summary = simulate_frames(THIN, MARKET, hourly_flow(CALLS, *extra_flow), lp_flows=lp)
    assert_reconciles(tables, summary)
    return tables, summary.row(0, named=True)


def assert_empty_whenever_no_shares(steps: pl.DataFrame) -> None:
    """shares = 0 implies no position of any kind, no cash and no NAV."""
    gone = steps.filter(pl.col("shares") == 0)
    assert (gone["n_live_series"] == 0).all()
    assert (gone["hedge_units"] == 0).all() and (gone["cash"] == 0).all()
    assert (gone["nav"] == 0).all()


def test_the_last_lp_is_paid_only_what_the_unwind_realised_and_the_rest_later():
    tables, s = run(hourly_lp((EXIT, -1e12)), (EXIT + 1, 24 * 14, 2000, "C", +1, 1))
    steps = tables.steps
    before, at = steps.row(EXIT - 1, named=True), steps.row(EXIT, named=True)
    assert before["hedge_units"] > 19.0  # the hedge was built, fill by fill
    # The exit tick: every call bought back, 64 fills sold, the rest of the units still held.
    assert at["n_live_series"] == 0 and 0.0 < at["hedge_units"] < before["hedge_units"]
    # The leaver took the cash the closes realised, never the units still in the pool ...
    assert at["cash"] == pytest.approx(0.0, abs=1e-6)
    assert at["nav"] == pytest.approx(at["hedge_units"] * 2000.0, rel=1e-12)
    # ... and keeps the shares that stand for them, at an unchanged NAV per share.
    assert at["shares"] > 0.0
    assert at["nav_per_share"] == pytest.approx(at["nav"] / at["shares"], rel=1e-12)
    # The next tick sells the rest and pays it: the pool is empty, never insolvent.
    after = steps.row(EXIT + 1, named=True)
    assert after["shares"] == 0.0 and after["nav"] == 0.0 and after["hedge_units"] == 0.0
    assert not steps["insolvent"].any() and not s["insolvent"]
    assert_empty_whenever_no_shares(steps)
    paid = tables.lp.filter(pl.col("event") == "withdrawal")
    assert paid["waited"].to_list() == [False, True]
    # Every dollar the pool had at the request, less what the unwind cost, reached the leaver.
    unwind = -(steps["pnl_total"][EXIT] + steps["pnl_total"][EXIT + 1])
    assert -paid["amount"].sum() == pytest.approx(before["nav"] - unwind, rel=1e-12)
    # A pool its last LP is leaving takes no new flow; an emptied one none either, and says so
    # (it was labelled `leverage`: leverage is infinite at NAV 0).
    late = tables.trades.filter(pl.col("ts") == tables.trades["ts"].max())
    assert late["reject_reason"].to_list() == ["winding_down"]
    emptied, _ = run(hourly_lp((EXIT, -1e12)), (EXIT + 5, 24 * 14, 2000, "C", +1, 1))
    assert emptied.trades["reject_reason"].to_list()[-1] == "empty"


def test_a_partial_exit_pays_what_fits_leaves_the_stayers_whole_and_hedged():
    """99 % of NAV leaves a pool short 380 long-dated calls hedged with ~200 ETH, through a
    limit so tight (0.07 %) that a fill moves 0.025 ETH: the closes it forces cannot all be
    made in one tick, so the leaver is paid what they realised, the rest a tick later."""
    strategy = {**THIN, "mev": {"model": "sandwich", "max_slippage": 0.0007}}
    exit_at, market = 8000, hourly_market([2000.0] * 8010, iv=0.6)
    flow = hourly_flow((0, 24 * 400, 2000, "C", +1, 380))
    alone, _ = simulate_frames(strategy, market, flow)
    tables, summary = simulate_frames(
        strategy, market, flow, lp_flows=hourly_lp((exit_at, -990_000.0))
    )
    assert_reconciles(tables, summary)
    steps, ref = tables.steps, alone.steps
    paid = tables.lp.filter(pl.col("event") == "withdrawal")
    assert paid["waited"].to_list() == [False, True]  # the rest waited a tick
    request = tables.lp.filter(pl.col("event") == "request")
    assert paid["shares"].sum() == pytest.approx(request["shares"][0], rel=1e-12)
    before = ref.row(exit_at, named=True)
    for t in (exit_at, exit_at + 1):
        # The stayers' NAV per share is what it would have been without the exit: the leaver
        # pays every close the exit forces, to the dollar (no fee is charged here) ...
        assert steps["nav_per_share"][t] == pytest.approx(ref["nav_per_share"][t], rel=1e-5)
        # ... and the collateral rule holds after each payment.
        assert steps["free_cash"][t] >= -1e-6 and steps["collateral_gap"][t] == 0.0
        assert steps["utilisation"][t] <= 1.0 + 1e-12
    # Their delta after the exit is no more open than the policy had it before the LP step
    # (the same as without the exit): a call is bought back only as far as the venue took
    # the unit that hedged it.
    assert abs(steps["net_delta"][exit_at]) <= abs(ref["net_delta"][exit_at]) + 1e-9
    assert steps["shares"][exit_at] > steps["shares"][exit_at + 1] > 0
    assert -paid["amount"].sum() < 0.99 * before["nav"] * 1.01  # no more than was asked
    assert not steps["insolvent"].any() and summary["bad_debt"][0] == 0.0
