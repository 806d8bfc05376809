"""The hedge instrument: spot units bought and sold for cash, or perp contracts that tie up no
cash, settle their move as variation margin and pay funding. Every hedge fill goes through
`trade_underlying`, which prices it through the slippage model and records it."""

from numba import njit

from backtest.kernel import slippage
from backtest.kernel.types import INSTRUMENT

PERP = INSTRUMENT["perp"]


# inline: a step of the tick; all steps un-inlined cost 0.33 s vs 0.17 s on 200k flat ticks
@njit(cache=True, inline="always")
def mark_hedge(acct, row, ds, hedge):
    """The hedge's part of the move from t-1 to t; a perp settles it in cash at once."""
    row.pnl_delta += acct.units * ds
    if hedge.instrument == PERP:
        acct.cash += acct.units * ds


@njit(cache=True)
def funding_paid(acct, spot_prev, funding_prev, dt, hedge):
    """Perp funding over (t-1, t] at the rate and spot of t-1 (longs pay a positive rate)."""
    if hedge.instrument == PERP:
        return -acct.units * spot_prev * funding_prev * dt
    return 0.0


@njit(cache=True)
def hedge_value(acct, s_t, hedge):
    """What the hedge adds to NAV: spot units at spot; a perp's value is already cash."""
    return 0.0 if hedge.instrument == PERP else acct.units * s_t


@njit(cache=True)
def trade_underlying(t, mk, order, reason, acct, row, hedges, hedge, slip):
    """Trade `order` underlying (signed) at spot[t] through the slippage model and return the
    quantity filled; record it in hedges while there is room (the count goes on, so the caller
    can size a rerun)."""
    s_t = mk.spot[t]
    filled, price, slip_cost, gas, mev = slippage.execute(order, s_t, mk.iv[t], slip)
    cost = slip_cost + gas + mev
    acct.cash -= cost + (0.0 if hedge.instrument == PERP else filled * s_t)
    acct.units += filled
    acct.nav -= cost
    row.pnl_hedge_cost -= cost
    if acct.n_hedges < hedges.shape[0]:
        h = hedges[acct.n_hedges]
        h.ts = mk.ts[t]
        h.qty = filled
        h.spot = s_t
        h.exec_price = price
        h.slippage_cost = slip_cost
        h.gas_cost = gas
        h.mev_cost = mev
        h.reason = reason
    acct.n_hedges += 1
    return filled
