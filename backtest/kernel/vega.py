"""Vega risk managed, not only reported: the limit on fills that add vega, and the hedge with
listed options (docs/design.md, "Vega hedging").

Vega per NAV is book vega per vol point (0.01 of IV) over NAV: 1e-4 means a one-point move in
IV moves NAV by 0.01 %. A listed option is bought at the market's vol plus half the exchange's
spread (sold at minus half), plus a fee per contract; it joins the book at its mark, so the
spread and the fee are what it costs (pnl_vega_hedge_cost) and everything after is greeks.
"""

import math

from numba import njit

from backtest.kernel import collateral
from backtest.kernel.instrument import hedge_row
from backtest.kernel.lending import fill_cap
from backtest.kernel.types import VEGA_BAND, VEGA_POLICY, VEGA_TENOR_MATCHED
from backtest.kernel.valuation import MIN_VOL, price_at, valued

PER_VOL_POINT = 0.01
BAND = VEGA_POLICY["band"]


@njit(cache=True)
def vega_room(book_vega, dv, size, nav, pricing):
    """Contracts of a fill that adds dv vega per contract which keep |book vega| within
    max_vega x NAV (a fill that takes vega off is never cut); `size` when the limit is off."""
    if pricing.max_vega <= 0.0 or dv == 0.0:
        return size
    limit = pricing.max_vega * max(nav, 0.0) / PER_VOL_POINT
    room = (limit - book_vega) / dv if dv > 0.0 else (-limit - book_vega) / dv
    return min(size, max(room, 0.0))


@njit(cache=True)
def held_vega(book, acct, first):
    """The book vega of the listed options the pool holds (series from `first` on)."""
    vega = 0.0
    for j in range(acct.n_live):
        i = book.live[j]
        if i >= first:
            vega += book.qty[i] * book.vega[i]
    return vega


@njit(cache=True)
def nearest(listed, lo, hi, expiry_ns, ser):
    """Of the tick's listed options listed.series[lo:hi], the one whose expiry is nearest."""
    best, gap = lo, math.inf
    for c in range(lo, hi):
        d = abs(ser.expiry[listed.series[c]] - expiry_ns)
        if d < gap:
            best, gap = c, d
    return best


@njit(cache=True)
def trade_listed(t, mk, i, want, reason, ser, terms, book, acct, row, out, pool, hedge, vh):
    """Buy (want > 0) or sell listed option i, as much of `want` contracts as the collateral rule
    allows, at market vol +- half the spread plus the fee; record it among the hedges."""
    s_t = mk.spot[t]
    direction = 1.0 if want > 0.0 else -1.0
    size = collateral.fill_size(t, mk, ser, book, acct, i, direction, abs(want), pool, hedge, 0.0)
    # Cut, as flow is, where it would need lent cash the money market cannot repay now.
    kept = fill_cap(t, mk, ser, book, acct, i, direction, size, pool, hedge, 0.0)
    if kept < size:
        size = kept
        acct.recall_blocked = 1
    if size <= 0.0:
        return
    mark = book.price[i]
    vol = max(book.sigma[i] + direction * 0.5 * vh.spread_vol, MIN_VOL)
    paid = price_at(i, s_t, mk.rate[t], vol, ser, terms, book)
    fee = size * min(vh.fee_spot * s_t, vh.fee_cap * paid)
    filled = direction * size
    spread = filled * (paid - mark)
    acct.cash -= filled * paid + fee
    collateral.trade_position(book, acct, ser, i, filled, s_t, pool, hedge)
    acct.nav -= spread + fee
    row.pnl_vega_hedge_cost -= spread + fee
    out.series[i].volume += size
    k = hedge_row(out.hedges, acct, mk.ts[t], filled, s_t, paid, spread, reason)
    if k >= 0:
        h = out.hedges[k]
        h.series = i
        h.iv = vol
        h.vega = filled * book.vega[i]
        h.fee = fee
        h.venue_price_before = math.nan  # a listed option: no cpmm venue
        h.venue_price_after = math.nan


@njit(cache=True)
def hedge_vega(
    t,
    mk,
    ser,
    surf,
    imp,
    terms,
    listed,
    bucket_vega,
    book,
    acct,
    row,
    out,
    pool,
    pricing,
    hedge,
    vh,
):
    """Step 4b. band: when |book vega| passes band x NAV, trade the listed option nearest to
    tenor_days back to target x NAV. tenor_matched: book vega per listed expiry (each position
    counts at the expiry nearest its own); when the sum of their sizes passes band x NAV, each
    is traded back with its own expiry's option, all scaled to target x NAV in total."""
    lo, hi = listed.offsets[t], listed.offsets[t + 1]
    if (
        hi == lo
        or acct.shares <= 0.0
        or acct.insolvent == 1
        or acct.nav <= 0.0
        or acct.winding_down
    ):
        return
    now = mk.ts[t]
    unit = acct.nav / PER_VOL_POINT  # book vega of "1.0 x NAV"
    if vh.policy == BAND:
        v = acct.book_vega
        if abs(v) <= vh.band * unit:
            return
        i = listed.series[nearest(listed, lo, hi, now + vh.tenor_days, ser)]
        valued(i, t, mk, ser, surf, imp, terms, book, pricing)
        if book.vega[i] > 0.0:
            want = (math.copysign(vh.target * unit, v) - v) / book.vega[i]
            trade_listed(
                t, mk, i, want, VEGA_BAND, ser, terms, book, acct, row, out, pool, hedge, vh
            )
        return
    n = hi - lo
    for b in range(n):
        bucket_vega[b] = 0.0
    for j in range(acct.n_live):
        i = book.live[j]
        b = nearest(listed, lo, hi, ser.expiry[i], ser) - lo
        bucket_vega[b] += book.qty[i] * book.vega[i]
    total = 0.0
    for b in range(n):
        total += abs(bucket_vega[b])
    if total <= vh.band * unit:
        return
    keep = min(1.0, vh.target * unit / total)
    for b in range(n):
        if bucket_vega[b] == 0.0:
            continue
        i = listed.series[lo + b]
        valued(i, t, mk, ser, surf, imp, terms, book, pricing)
        if book.vega[i] > 0.0:
            want = bucket_vega[b] * (keep - 1.0) / book.vega[i]
            trade_listed(
                t,
                mk,
                i,
                want,
                VEGA_TENOR_MATCHED,
                ser,
                terms,
                book,
                acct,
                row,
                out,
                pool,
                hedge,
                vh,
            )
