"""The hedge instrument: spot units bought and sold for cash (a short is borrowed and pays
borrow_fee), or perp contracts that tie up no cash, settle their move as variation margin and pay
funding. Every hedge fill goes through `trade_underlying`, which prices it through the slippage
model and records it."""

import math

from numba import njit

from backtest.kernel import slippage
from backtest.kernel.types import INSTRUMENT, SLIPPAGE

PERP = INSTRUMENT["perp"]
CPMM = SLIPPAGE["cpmm"]


# inline: a step of the tick; with nothing inlined the kernel is 1.23x the greeks floor
# instead of 1.04x (200k-tick board, bench)
@njit(cache=True, inline="always")
def mark_hedge(acct, row, ds, hedge):
    """The hedge's part of the move from t-1 to t; a perp settles it in cash at once."""
    row.pnl_delta += acct.units * ds
    if hedge.instrument == PERP:
        acct.cash += acct.units * ds


@njit(cache=True)
def hedge_carry(units, spot, funding, dt, hedge):
    """What holding the hedge costs over dt at the rate and spot of its start: perp funding
    (longs pay a positive rate), or the borrow fee of short spot units."""
    if hedge.instrument == PERP:
        return -units * spot * funding * dt
    return -hedge.borrow_fee * max(-units, 0.0) * spot * dt


@njit(cache=True)
def hedge_value(acct, s_t, hedge):
    """What the hedge adds to NAV: spot units at spot; a perp's value is already cash."""
    return 0.0 if hedge.instrument == PERP else acct.units * s_t


@njit(cache=True)
def cash_paid(filled, s_t, cost, hedge):
    """Cash that trading `filled` units costs: their price (spot only) and the trading cost."""
    return cost + (0.0 if hedge.instrument == PERP else filled * s_t)


@njit(cache=True)
def hedge_row(hedges, acct, ts, qty, spot, price, slippage_cost, reason):
    """Count a hedge trade and write the fields every instrument has into its row; returns the
    row's index, or -1 past the room (the count goes on, so the caller can size a rerun)."""
    k = acct.n_hedges
    acct.n_hedges += 1
    if k >= hedges.shape[0]:
        return -1
    h = hedges[k]
    h.ts = ts
    h.qty = qty
    h.spot = spot
    h.exec_price = price
    h.slippage_cost = slippage_cost
    h.reason = reason
    return k


@njit(cache=True)
def trade_underlying(t, mk, order, reason, acct, row, hedges, hedge, slip, mev):
    """Trade `order` underlying (signed) at spot[t] through the slippage model and return the
    quantity filled; record it in hedges while there is room (the count goes on, so the caller
    can size a rerun). A cpmm venue with a half-life remembers where the fill left it."""
    s_t = mk.spot[t]
    filled, price, slip_cost, gas, mev_cost, attacker, before, after, sandwiched = slippage.execute(
        order, s_t, mk.iv[t], slip, mev, acct
    )
    if filled == 0.0:  # nothing fits the price limit: no trade, no row
        return 0.0
    if slip.model == CPMM and slip.arb_half_life > 0.0:
        acct.venue_gap = math.log(after / s_t)
    cost = slip_cost + gas + mev_cost
    acct.cash -= cash_paid(filled, s_t, cost, hedge)
    acct.units += filled
    acct.nav -= cost
    row.pnl_hedge_cost -= cost
    k = hedge_row(hedges, acct, mk.ts[t], filled, s_t, price, slip_cost, reason)
    if k >= 0:
        h = hedges[k]
        h.gas_cost = gas
        h.mev_cost = mev_cost
        h.series = -1
        h.iv = math.nan
        h.unfilled = order - filled
        h.venue_price_before = before
        h.venue_price_after = after
        h.sandwiched = sandwiched
        h.attacker_pnl = attacker
    return filled
