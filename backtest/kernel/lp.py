"""LPs: deposits and withdrawals at NAV per share, the withdrawal queue and the run rule.

An exit is fair to the LPs who stay: a withdrawal is paid at the NAV per share after the cost of
the closes it forces (collateral.shrink, greedy: least closing first), so the leaver bears that
cost; the withdrawal fee stays with the LPs who remain. A leaver is paid only what the closes
realised (collateral.payable): what the venue could not take this tick waits at the head of
the queue. The last LP out closes every position and takes what is left (no fee: nobody stays
to keep it), leaving NAV 0; while the venue still holds part of the unwind the pool is winding
down and takes no flow. An emptied pool
restarts at 1.0 a share on the next deposit; a pool with negative equity takes no deposits and
pays no withdrawals. If closing the book costs more than the pool is worth, the last LP gets
nothing and the rest is bad debt. Every event is an `lp` record.

Yield-chasing LPs (off while both elasticities are 0) decide at the first tick of each UTC day
from the trailing APY of NAV per share, read from the steps rows of earlier ticks only.
"""

import math

import numpy as np
from numba import njit

from backtest.kernel.collateral import close_all, exit_cap, payable, shrink
from backtest.kernel.hedge import restore_delta
from backtest.kernel.lending import can_pay, stuck
from backtest.kernel.types import LP_DEPOSIT, LP_REJECTED, LP_REQUEST, LP_WITHDRAWAL, WITHDRAWAL
from backtest.kernel.valuation import NS_PER_YEAR

LAST = 1e-12  # a request for all but this share of the shares is the last LP's
ROUNDING = 1e-9  # relative to NAV: what an emptied pool may have left from rounding
NS_PER_DAY = 86_400 * 1_000_000_000
DAY_IN_YEARS = NS_PER_DAY / NS_PER_YEAR  # the yield-chasing decision's cadence
# Whether an event is a yield-chasing LP's (np.int8, not an int literal: see types.py)
FLOW, CHASE = np.int8(0), np.int8(1)
# Whether a payout waited for lent cash to be recalled (np.int8, as above)
PROMPT = np.int8(0)


@njit(cache=True)
def record_lp(
    lp_out, acct, ts, event, amount, shares, nav_per_share, unwind_cost, fee, driven, waited
):
    if acct.n_lp_events < lp_out.shape[0]:
        rec = lp_out[acct.n_lp_events]
        rec.ts = ts
        rec.event = event
        rec.amount = amount
        rec.shares = shares
        rec.nav_per_share = nav_per_share
        rec.unwind_cost = unwind_cost
        rec.fee = fee
        rec.yield_driven = driven
        rec.waited = waited
    acct.n_lp_events += 1


@njit(cache=True)
def deposit(acct, records, now, amount, driven):
    """Mint shares at NAV per share (1.0 in an empty pool); refused when equity is gone."""
    if acct.shares <= 0.0:
        price = 1.0
    elif acct.nav > 0.0:
        price = acct.nav / acct.shares
    else:
        record_lp(records.lp, acct, now, LP_REJECTED, amount, 0.0, 0.0, 0.0, 0.0, driven, PROMPT)
        return
    minted = amount / price
    acct.shares += minted
    acct.cash += amount
    acct.nav += amount
    acct.lp_flow += amount
    record_lp(records.lp, acct, now, LP_DEPOSIT, amount, minted, price, 0.0, 0.0, driven, PROMPT)


@njit(cache=True)
def request(acct, queue, records, now, shares, nav_per_share, lp, driven):
    """Queue a withdrawal of `shares`, due withdrawal_delay later."""
    queue.due[acct.wq_tail] = now + lp.withdrawal_delay
    queue.shares[acct.wq_tail] = shares
    acct.wq_tail += 1
    amount = -shares * nav_per_share
    record_lp(
        records.lp, acct, now, LP_REQUEST, amount, -shares, nav_per_share, 0.0, 0.0, driven, PROMPT
    )


@njit(cache=True)
def pay(t, mk, ser, book, acct, row, records, wanted, waited, pool, hedge, slip, mev, lp):
    """Pay out `wanted` shares (all there are, at most) at NAV per share after the unwind;
    `waited`: it waited before (for lent cash, lending.can_pay, or for the venue). Returns the
    shares still to pay: what the closes could not realise this tick (collateral.payable)
    waits at the head of the queue, so the leaver is paid only what the closes realised and
    the stayers' NAV per share does not move; an emptied pool has no positions and no cash."""
    now = mk.ts[t]
    shares = min(wanted, acct.shares)
    if shares <= 0.0:
        return 0.0
    nav_per_share = acct.nav / acct.shares
    if acct.nav <= 0.0:
        record_lp(
            records.lp, acct, now, LP_REJECTED, 0.0, -shares, nav_per_share, 0.0, 0.0, FLOW, waited
        )
        return 0.0
    nav_before = acct.nav
    last = shares >= acct.shares * (1.0 - LAST)
    if last:
        shares = acct.shares
        close_all(t, mk, ser, book, acct, row, records, WITHDRAWAL, pool, hedge, slip, mev)
        fee_rate = 0.0
        net = max(acct.nav, 0.0)
    else:
        value = shares * nav_per_share
        reserve = value * (1.0 - lp.withdrawal_fee)
        cap = exit_cap(pool)
        net_delta = acct.book_delta + acct.units
        shrink(
            t, mk, ser, book, acct, row, records, reserve, cap, WITHDRAWAL, pool, hedge, slip, mev
        )
        # The stayers re-hedged before the leaver is paid: the leaver pays for it, and it may
        # use the cash the payout would have taken (the rest of the payout then waits).
        restore_delta(
            t, mk, book, acct, row, records.hedges, net_delta, WITHDRAWAL, pool, hedge, slip, mev
        )
        # What the closes cost the leaver: never a gain (a hedge sold back into a venue that
        # still remembers the pool's earlier buys earns back costs every LP bore: it stays).
        net = max(value - max(nav_before - acct.nav, 0.0), 0.0)
        fee_rate = lp.withdrawal_fee
    unwind_cost = nav_before - acct.nav
    payout = net * (1.0 - fee_rate)
    room = payable(acct, mk.spot[t], last, stuck(acct), pool)
    burned, fee = shares, net * fee_rate
    if payout > room + ROUNDING * nav_before:
        # Part of the claim is not cash yet: pay what is, burn the shares that covers (with
        # the fee on it and, for a partial exit, the whole unwind cost), the rest waits.
        payout = max(room, 0.0)
        fee = payout * fee_rate / (1.0 - fee_rate)  # withdrawal_fee < 1 (config)
        if last:
            burned = shares * payout / acct.nav if acct.nav > 0.0 else 0.0
        else:
            burned = shares * min((payout + fee + max(unwind_cost, 0.0)) / value, 1.0)
    if burned <= 0.0 and payout <= 0.0:
        return wanted  # nothing realised: the request waits whole
    acct.shares -= burned
    acct.cash -= payout
    acct.nav -= payout
    acct.lp_flow -= payout
    empty = acct.shares == 0.0 and acct.n_live == 0 and acct.units == 0.0
    if empty and abs(acct.nav) <= ROUNDING * nav_before:
        # The book is empty: what is left of the running totals is rounding.
        acct.cash = acct.nav = acct.book_value = acct.requirement = acct.locked_cash = 0.0
        acct.short_calls = acct.short_put_strikes = acct.long_value = 0.0
    record_lp(
        records.lp,
        acct,
        now,
        LP_WITHDRAWAL,
        -payout,
        -burned,
        nav_per_share,
        unwind_cost,
        fee,
        FLOW,
        waited,
    )
    return wanted - burned if burned < shares else 0.0


@njit(cache=True)
def trailing_apy(t, mk, steps, acct, window):
    """NAV per share's annualised return from the last tick at or before now - window to the
    tick before now (both recorded: no look-ahead); NaN until the window is full."""
    start = mk.ts[t] - window
    if t == 0 or mk.ts[0] > start:
        return math.nan
    while mk.ts[acct.yield_from + 1] <= start:
        acct.yield_from += 1
    first, last = steps[acct.yield_from].nav_per_share, steps[t - 1].nav_per_share
    if acct.yield_from >= t - 1 or first <= 0.0 or last <= 0.0:
        return math.nan
    years = (mk.ts[t - 1] - mk.ts[acct.yield_from]) / NS_PER_YEAR
    return math.exp(math.log(last / first) / years) - 1.0


@njit(cache=True)
def unclaimed(acct, queue):
    """Shares no queued request has asked for yet: what a new run or yield request takes its
    share of, so requests waiting out a delay never add up to more than the LPs hold."""
    asked = 0.0
    for k in range(acct.wq_head, acct.wq_tail):
        asked += queue.shares[k]
    return max(acct.shares - asked, 0.0)


@njit(cache=True)
def chase_yield(t, mk, queue, acct, records, lp):
    """Once a UTC day: money in at deposit_elasticity x (APY - benchmark) x NAV x a day in years,
    or a request for withdrawal_elasticity x (benchmark - APY) of a day's unclaimed shares (at
    most all of them)."""
    now = mk.ts[t]
    day = now // NS_PER_DAY
    if day == acct.yield_day:
        return
    acct.yield_day = day
    apy = trailing_apy(t, mk, records.steps, acct, lp.yield_window_days)
    if math.isnan(apy) or acct.shares <= 0.0 or acct.nav <= 0.0:
        return
    excess = apy - lp.benchmark_apy
    if excess > 0.0 and lp.deposit_elasticity > 0.0:
        share = min(lp.deposit_elasticity * excess * DAY_IN_YEARS, 1.0)
        deposit(acct, records, now, share * acct.nav, CHASE)
    elif excess < 0.0 and lp.withdrawal_elasticity > 0.0:
        share = min(-lp.withdrawal_elasticity * excess * DAY_IN_YEARS, 1.0)
        nps = acct.nav / acct.shares
        request(acct, queue, records, now, share * unclaimed(acct, queue), nps, lp, CHASE)


# inline: a step of the tick; with nothing inlined the kernel is 1.23x the greeks floor
# instead of 1.04x (200k-tick board, bench)
@njit(cache=True, inline="always")
def lp_step(t, mk, ser, lp_rows, queue, book, acct, row, records, pool, hedge, slip, mev, lp):
    """This tick's deposits and withdrawal requests, the run rule, then the withdrawals due."""
    now = mk.ts[t]
    acct.lp_flow = 0.0
    acct.winding_down = 0
    n_rows = lp_rows.tick.shape[0]
    while acct.lp_at < n_rows and lp_rows.tick[acct.lp_at] < t:  # rows before the window
        acct.lp_at += 1
    while acct.lp_at < n_rows and lp_rows.tick[acct.lp_at] == t:
        amount = lp_rows.amount[acct.lp_at]
        acct.lp_at += 1
        if amount > 0.0:
            deposit(acct, records, now, amount, FLOW)
        elif acct.shares > 0.0 and acct.nav > 0.0:
            nav_per_share = acct.nav / acct.shares
            request(acct, queue, records, now, -amount / nav_per_share, nav_per_share, lp, FLOW)
        else:
            record_lp(records.lp, acct, now, LP_REJECTED, amount, 0.0, 0.0, 0.0, 0.0, FLOW, PROMPT)
    if lp.deposit_elasticity > 0.0 or lp.withdrawal_elasticity > 0.0:
        chase_yield(t, mk, queue, acct, records, lp)
    # The run rule: each further run_drawdown of drawdown in NAV per share sends run_fraction of
    # the shares not already on their way out.
    nav_per_share = acct.nav / acct.shares if acct.shares > 0.0 else 0.0
    if lp.run_drawdown > 0.0 and nav_per_share > 0.0:
        if nav_per_share > acct.peak_nps:
            acct.peak_nps = nav_per_share
            acct.run_level = lp.run_drawdown
        if 1.0 - nav_per_share / acct.peak_nps >= acct.run_level:
            shares = lp.run_fraction * unclaimed(acct, queue)
            request(acct, queue, records, now, shares, nav_per_share, lp, FLOW)
            acct.run_level += lp.run_drawdown
    while acct.wq_head < acct.wq_tail and queue.due[acct.wq_head] <= now:
        wanted = queue.shares[acct.wq_head]
        if not can_pay(acct, wanted, LAST, lp):  # lent cash is stuck: it and those behind wait
            k = acct.wq_head
            while k < acct.wq_tail and queue.due[k] <= now:
                queue.waited[k] = 1
                k += 1
            acct.lp_waiting = 1
            acct.winding_down = 1 if wanted >= acct.shares * (1.0 - LAST) else 0
            return
        waited = queue.waited[acct.wq_head]
        left = pay(t, mk, ser, book, acct, row, records, wanted, waited, pool, hedge, slip, mev, lp)
        if left > 0.0:  # the closes could not realise it all: the rest waits, and those behind
            queue.shares[acct.wq_head] = left
            queue.waited[acct.wq_head] = 1
            acct.winding_down = 1 if left >= acct.shares * (1.0 - LAST) else 0
            return
        acct.wq_head += 1
