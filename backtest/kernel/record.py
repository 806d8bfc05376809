"""Step 7, record: the stocks at the end of the tick into its steps row (the PnL components are
already there: each step adds to them as it books money)."""

import math

from numba import njit

from backtest.kernel.collateral import leverage, reported_gap


# inline: a step of the tick; with nothing inlined the kernel is 1.23x the greeks floor
# instead of 1.04x (200k-tick board, bench)
@njit(cache=True, inline="always")
def record(t, mk, acct, row, pool, hedge):
    nav = acct.nav
    row.ts = mk.ts[t]
    row.spot = mk.spot[t]
    row.oracle = mk.oracle[t] if mk.oracle.shape[0] > 0 else mk.spot[t]
    row.iv = mk.iv[t]
    row.nav = nav
    row.cash = acct.cash
    row.hedge_units = acct.units
    row.book_delta = acct.book_delta
    row.net_delta = acct.book_delta + acct.units
    row.book_gamma = acct.book_gamma
    row.book_vega = acct.book_vega
    row.book_theta = acct.book_theta
    row.collateral_required = acct.requirement
    row.utilisation = acct.requirement / nav if nav > 0.0 else math.inf
    row.free_cash = acct.cash - acct.locked_cash
    row.leverage = leverage(acct, mk.spot[t], hedge)
    row.collateral_gap = reported_gap(acct, pool)
    row.pnl_total = (
        row.pnl_delta
        + row.pnl_gamma
        + row.pnl_vega
        + row.pnl_theta
        + row.pnl_vanna
        + row.pnl_volga
        + row.pnl_residual
        + row.pnl_fees
        + row.pnl_impact
        + row.pnl_hedge_cost
        + row.pnl_funding
        + row.pnl_interest
        + row.pnl_liquidation
        + row.pnl_vega_hedge_cost
        + row.pnl_oracle
        + row.pnl_credit
    )
    row.lp_flow = acct.lp_flow
    row.shares = acct.shares
    row.nav_per_share = nav / acct.shares if acct.shares > 0.0 else 0.0
    row.n_live_series = acct.n_live
    row.insolvent = acct.insolvent
    row.halted = acct.halted
