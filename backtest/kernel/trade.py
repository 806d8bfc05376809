"""Step 4, trade: the circuit breaker decides whether flow is taken at all; then each flow row of
the tick is priced with the market at t (never later), charged fees and filled, partly filled or
rejected by the collateral rule."""

import math

import numpy as np
from numba import njit

from backtest.kernel import collateral, impact
from backtest.kernel.book import DUST
from backtest.kernel.fees import fee_for
from backtest.kernel.impact import NS_PER_HOUR
from backtest.kernel.lending import fill_cap
from backtest.kernel.reference import acceptance, reference_price
from backtest.kernel.types import (
    REJECT_COLLATERAL_LOCKED,
    REJECT_EMPTY,
    REJECT_HALTED,
    REJECT_INSOLVENT,
    REJECT_LEVERAGE,
    REJECT_NO_EDGE,
    REJECT_NONE,
    REJECT_PRICE,
    REJECT_UTILISATION,
    REJECT_VEGA_LIMIT,
    REJECT_WINDING_DOWN,
)
from backtest.kernel.valuation import fill_price, price_at, valued
from backtest.kernel.vega import vega_room


# inline: a step of the tick; with nothing inlined the kernel is 1.23x the greeks floor
# instead of 1.04x (200k-tick board, bench)
@njit(cache=True, inline="always")
def circuit_breaker(t, mk, log_iv_sum, acct, pricing):
    """Halt new flow for cb_hours when iv strays from its trailing geometric mean by more than
    cb_iv_move (vol points), or when free capital falls below cb_min_free x NAV."""
    window = pricing.cb_hours * NS_PER_HOUR
    if pricing.cb_iv_move > 0.0:
        while acct.cb_from < t and mk.ts[acct.cb_from] < mk.ts[t] - window:
            acct.cb_from += 1
        n = t - acct.cb_from
        if n > 0:
            mean = math.exp((log_iv_sum[t] - log_iv_sum[acct.cb_from]) / n)
            if abs(mk.iv[t] - mean) > pricing.cb_iv_move:
                acct.halt_until = mk.ts[t] + np.int64(window)
    free = (acct.nav - acct.requirement) / acct.nav if acct.nav > 0.0 else 0.0
    if pricing.cb_min_free > 0.0 and free < pricing.cb_min_free:
        acct.halt_until = mk.ts[t] + np.int64(window)
    acct.halted = 1 if mk.ts[t] < acct.halt_until else 0


@njit(cache=True)
def quote(i, side, filled, s_t, o_t, r_t, ser, terms, book, acct, pricing):
    """What a fill of `filled` contracts of series i pays, exactly as it is booked: (vol, price
    per contract with its own impact at the market's spot s_t, the same at the spot the pool
    quotes on o_t, fee, the fee's vega part, premium = the cash the pool receives). o_t is the
    oracle's price (s_t without an oracle). A price-elastic trader weighs the same numbers."""
    vol, paid = book.sigma[i], book.price[i]
    move = impact.own_move(side, filled, pricing) if impact.impact_on(pricing) else 0.0
    if move != 0.0:
        vol, paid = fill_price(i, s_t, r_t, ser, terms, book, move)
    quoted = paid if o_t == s_t else price_at(i, o_t, r_t, vol, ser, terms, book)
    fee, fee_vega = fee_for(
        filled, side, quoted, o_t, -side * filled * book.vega[i], acct.book_vega, acct.nav, pricing
    )
    return vol, paid, quoted, fee, fee_vega, side * filled * quoted + fee


@njit(cache=True)
def size_scale(nav, s_t, fp):
    """What every row of the tick is multiplied by so that the flow's expected daily notional is
    notional_per_nav x NAV: NAV at the start of the trade step (before any of the tick's rows,
    so they stay independent of their order; 0 once NAV is gone) over the nominal daily
    notional trades_per_day x size_median exp(size_sigma^2 / 2) x spot. 1 when off."""
    if fp.notional_per_nav == 0.0:
        return 1.0
    nominal = fp.trades_per_day * fp.size_median * math.exp(0.5 * fp.size_sigma**2) * s_t
    return fp.notional_per_nav * max(nav, 0.0) / nominal


# inline: a step of the tick; with nothing inlined the kernel is 1.23x the greeks floor
# instead of 1.04x (200k-tick board, bench)
@njit(cache=True, inline="always")
def trade(t, mk, ser, surf, imp, terms, flow, book, acct, row, records, pool, pricing, hedge, fp):
    """Fill this tick's flow rows. Every row is priced off the tick's impact snapshot, plus the
    vol move its own fill causes (impact.own_move), which it pays: `impact` in USD, booked as
    pnl_impact. Its move reaches every mark from the next tick. With elasticity > 0 a trader
    who is not informed takes the quote with probability p (reference.acceptance) against the
    reference venue, decided by the row's own uniform u; a declined row moves nothing. With
    notional_per_nav > 0 each row offers its size x size_scale: fills, fees, collateral and the
    recorded `size` all see the offered size. With max_vega > 0 a fill stops where |book vega|
    would pass max_vega x NAV (reject reason vega_limit)."""
    now, s_t, atm, r_t, snap = mk.ts[t], mk.spot[t], mk.iv[t], mk.rate[t], mk.snap[t]
    o_t = mk.oracle[t] if mk.oracle.shape[0] > 0 else s_t
    scale = size_scale(acct.nav, s_t, fp)
    acct.traded = 0
    while acct.flow_at < flow.tick.shape[0] and flow.tick[acct.flow_at] == t:
        fi = acct.flow_at
        acct.flow_at += 1
        i = flow.series[fi]
        side = flow.side[fi]
        size = flow.size[fi] * scale  # x 1.0 when off: exactly the row's size
        valued(i, t, mk, ser, surf, imp, terms, book, pricing)
        mark = book.price[i]
        stale = flow.stale[fi]
        if stale:  # he buys what the oracle's price makes cheap, sells what it makes dear
            side = 1.0 if price_at(i, o_t, r_t, book.sigma[i], ser, terms, book) < mark else -1.0
        direction = -side  # the pool takes the other side
        rec = records.trades[fi]
        rec.ts = now
        rec.series = i
        rec.side = side
        rec.size = size
        rec.spot = s_t
        rec.iv = book.sigma[i]
        rec.mark = mark
        rec.vega = book.vega[i]
        rec.reference = math.nan
        rec.p_accept = math.nan
        rec.oracle = o_t if mk.oracle.shape[0] > 0 else math.nan
        filled = 0.0
        if stale and abs(s_t / o_t - 1.0) <= fp.stale_edge:
            rec.reject_reason = REJECT_NO_EDGE
        elif acct.insolvent == 1:
            rec.reject_reason = REJECT_INSOLVENT
        elif acct.winding_down == 1:
            rec.reject_reason = REJECT_WINDING_DOWN
        elif acct.shares <= 0.0:
            rec.reject_reason = REJECT_EMPTY
        elif acct.halted == 1:
            rec.reject_reason = REJECT_HALTED
        elif collateral.over_leverage(acct, s_t, pool, hedge):
            rec.reject_reason = REJECT_LEVERAGE
        else:
            room = vega_room(acct.book_vega, direction * book.vega[i], size, acct.nav, pricing)
            # A quote on a stale oracle pays the trader the gap to the market's price: the
            # collateral rule counts what the fill leaves at market prices (0 without one).
            loss = (
                0.0
                if o_t == s_t
                else side * (mark - price_at(i, o_t, r_t, book.sigma[i], ser, terms, book))
            )
            if room >= DUST:
                filled = collateral.fill_size(
                    t, mk, ser, book, acct, i, direction, room, pool, hedge, loss
                )
            if filled >= size:
                rec.reject_reason = REJECT_NONE
            elif room < size and filled >= room:
                rec.reject_reason = REJECT_VEGA_LIMIT
            else:
                rec.reject_reason = REJECT_UTILISATION
            # Lent cash the money market cannot repay now is no collateral (0 without lending).
            kept = fill_cap(t, mk, ser, book, acct, i, direction, filled, pool, hedge, loss)
            if kept < filled:
                filled = kept
                rec.reject_reason = REJECT_COLLATERAL_LOCKED
                acct.recall_blocked = 1
        rec.filled = filled
        if filled <= 0.0:
            continue
        vol, paid, quoted, fee, fee_vega, premium = quote(
            i, side, filled, s_t, o_t, r_t, ser, terms, book, acct, pricing
        )
        rec.iv = vol
        rec.mark = quoted
        moved = side * filled * (paid - mark)
        gap = side * filled * (paid - quoted)  # 0.0 without an oracle
        if stale and gap - fee - moved <= 0.0:  # the oracle's gap does not pay his costs
            rec.reject_reason = REJECT_NO_EDGE
            rec.filled = 0.0
            continue
        if fp.elasticity > 0.0 and not flow.informed[fi] and not stale:
            ref = reference_price(i, side, s_t, r_t, atm, snap, ser, surf, terms, book, pricing, fp)
            p = acceptance(premium / filled - side * ref, book.vega[i], fp.elasticity)
            rec.reference = ref
            rec.p_accept = p
            if flow.u[fi] >= p:
                rec.reject_reason = REJECT_PRICE
                rec.filled = 0.0
                rec.fee_forgone = fee
                continue
        dq = direction * filled
        acct.cash += premium
        collateral.trade_position(book, acct, ser, i, dq, s_t, pool, hedge)
        acct.nav += fee + moved
        row.pnl_fees += fee
        row.pnl_impact += moved
        if gap != 0.0:
            acct.nav -= gap
            row.pnl_oracle -= gap
        rec.oracle_gap = gap
        impact.add_fill(imp, ser, i, side, filled, pricing)
        records.series[i].volume += filled
        records.series[i].fees += fee
        records.series[i].impact += moved
        rec.fee = fee
        rec.fee_vega = fee_vega
        rec.impact = moved
        rec.premium = premium
        acct.traded = 1
