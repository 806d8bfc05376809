"""Collateral, both modes in one place: what the book ties up, how much of a trade or a hedge
fits, and which positions a liquidation (or an LP's exit) closes, in what order and how much.

`full` (docs/design.md, "Full collateral"): apart from its free cash the pool holds what settles
every obligation in its worst case at the current spot. A short call locks one unit of spot or its
value in cash (long hedge units count as units), a short put its strike in cash, a borrowed spot
unit (short hedge) its value in cash; a perp unit, long or short, is margined with its value in
cash, and a long perp unit covers a short call as a spot unit does. The requirement adds what the
long options are worth. Free cash never goes below zero, so cash is never borrowed, and the
requirement stays within NAV; a move that breaks either is repaired by liquidation in the tick.

`dynamic`: margin_multiplier x the worst loss of book + hedge over a spot x vol stress grid, so
hedges and offsetting options count; that margin is held in cash, cash may go negative
(borrowing, at borrow_rate) and liquidation starts above liquidation_threshold x NAV.

Both modes fill trades up to max_utilisation x NAV, and liquidate back to it.
"""

import math

import numpy as np
from numba import njit

from backtest.kernel import slippage
from backtest.kernel.book import DUST, change_position, exposure
from backtest.kernel.bs import bs_price
from backtest.kernel.instrument import cash_paid, trade_underlying
from backtest.kernel.types import (
    COLLATERAL,
    INSTRUMENT,
    LIQUIDATION,
    N_SCENARIOS,
    SPOT_SHOCKS,
    VOL_SHOCKS,
)
from backtest.kernel.valuation import NS_PER_YEAR

DYNAMIC = COLLATERAL["dynamic"]
PERP = INSTRUMENT["perp"]
BISECTIONS = 60
TOL = 1e-9  # relative to NAV: shortfalls below it are rounding, not a breach
MAX_HEDGE_FILLS = 64  # a thin venue may need several fills to unwind the hedge
GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0
# Candidates of shrink as arguments: np.int64 and np.bool_, not literals (see types.py on codes).
THE_HEDGE = np.int64(-1)  # the candidate "the hedge"
PRO_RATA = np.int64(-3)  # the candidate "a slice of every position"
NOT_PAIRED = np.bool_(False)
NO_SERIES = np.int64(-1)  # dynamic_after with no trade (np.int64: see types.py on codes)


# --- full collateral --------------------------------------------------------------------------


@njit(cache=True)
def full_locks(short_calls, short_put_strikes, long_value, units, s, perp):
    """(requirement, locked cash) of a book with these exposures and hedge at spot s."""
    long_units = max(units, 0.0)
    short_units = max(-units, 0.0)
    if perp:
        locked = max(short_calls, long_units) * s + short_put_strikes + short_units * s
        return locked + long_value, locked
    covered = min(long_units, short_calls)
    locked = (short_calls - covered) * s + short_put_strikes + short_units * s
    return short_calls * s + short_put_strikes + short_units * s + long_value, locked


# --- dynamic collateral -----------------------------------------------------------------------


@njit(cache=True)
def scenario_prices(out, kind, spot, strike, tau, vol, rate, pool):
    """Prices of one series under every stress scenario, into out[N_SCENARIOS]."""
    s = 0
    for i in range(SPOT_SHOCKS.shape[0]):
        shocked_spot = spot * (1.0 + SPOT_SHOCKS[i] * pool.stress_spot)
        for j in range(VOL_SHOCKS.shape[0]):
            shocked_vol = vol * (1.0 + VOL_SHOCKS[j] * pool.stress_vol)
            out[s] = bs_price(kind, shocked_spot, strike, tau, shocked_vol, rate)
            s += 1


@njit(cache=True)
def spot_shock(s, pool):
    """Relative spot move of scenario s (scenarios run over spot shocks, then vol shocks)."""
    return SPOT_SHOCKS[s // VOL_SHOCKS.shape[0]] * pool.stress_spot


@njit(cache=True)
def hedge_scenario_pnl(out, units, spot, pool):
    """Add a hedge position's PnL under each scenario to out (vol shocks do not move it)."""
    for s in range(N_SCENARIOS):
        out[s] += units * spot * spot_shock(s, pool)


@njit(cache=True)
def dynamic_after(book, i, dq, mark, dunits, s_t, pool):
    """margin_multiplier x the worst scenario loss after series i moves by dq contracts (i < 0:
    none) and the hedge by dunits."""
    worst = 0.0
    for s in range(N_SCENARIOS):
        pnl = book.scen_pnl[s] + dunits * s_t * spot_shock(s, pool)
        if i >= 0:
            pnl += dq * (book.scen[i, s] - mark)
        if -pnl > worst:
            worst = -pnl
    return pool.margin_multiplier * worst


# --- the state of the collateral --------------------------------------------------------------


@njit(cache=True)
def update(book, acct, s_t, pool, hedge):
    """Requirement and locked cash from the book's current exposures (or scenario PnLs)."""
    if pool.collateral == DYNAMIC:
        acct.requirement = dynamic_after(book, NO_SERIES, 0.0, 0.0, 0.0, s_t, pool)
        acct.locked_cash = acct.requirement
    else:
        acct.requirement, acct.locked_cash = full_locks(
            acct.short_calls,
            acct.short_put_strikes,
            acct.long_value,
            acct.units,
            s_t,
            hedge.instrument == PERP,
        )


# inline: a step of the tick; with nothing inlined the kernel is 1.23x the greeks floor
# instead of 1.04x (200k-tick board, bench)
@njit(cache=True, inline="always")
def refresh(t, mk, ser, book, acct, pool, hedge):
    """The collateral at tick t from scratch (re-pricing every stress scenario, if dynamic)."""
    s_t = mk.spot[t]
    if pool.collateral == DYNAMIC:
        book.scen_pnl[:] = 0.0
        hedge_scenario_pnl(book.scen_pnl, acct.units, s_t, pool)
        for j in range(acct.n_live):
            i = book.live[j]
            tau = (ser.expiry[i] - mk.ts[t]) / NS_PER_YEAR
            scenario_prices(
                book.scen[i], ser.kind[i], s_t, ser.strike[i], tau, book.sigma[i], mk.rate[t], pool
            )
            for s in range(N_SCENARIOS):
                book.scen_pnl[s] += book.qty[i] * (book.scen[i, s] - book.price[i])
    update(book, acct, s_t, pool, hedge)


@njit(cache=True)
def debt(cash, units, s_t, hedge):
    """What the pool has borrowed: negative cash, and short spot units at their value."""
    borrowed_units = 0.0 if hedge.instrument == PERP else max(-units, 0.0)
    return max(-cash, 0.0) + borrowed_units * s_t


@njit(cache=True)
def leverage(acct, s_t, hedge):
    """(NAV + debt) / NAV: 1 when nothing is borrowed. Cash lent out is not in hand: cash
    below what is lent is borrowed."""
    if acct.nav <= 0.0:
        return math.inf
    return (acct.nav + debt(acct.cash - acct.lent, acct.units, s_t, hedge)) / acct.nav


@njit(cache=True)
def over_leverage(acct, s_t, pool, hedge):
    return leverage(acct, s_t, hedge) >= pool.max_leverage * (1.0 - TOL)


@njit(cache=True)
def shortfall(requirement, locked, cash, nav, reserve, cap, pool):
    """How far a state is from fitting (<= 0: it fits) with `reserve` of cash about to be paid
    out: the requirement above cap x what NAV is left, and (full) the cash missing to keep free
    cash at zero."""
    over = requirement - cap * (nav - reserve)
    if pool.collateral == DYNAMIC:
        return over
    return max(over, reserve - (cash - locked))


@njit(cache=True)
def gap(acct, pool):
    """What the pool lacks at the end of the tick: (full) requirement above NAV or free cash
    below zero, (dynamic) requirement above liquidation_threshold x NAV; 0 when it holds."""
    if pool.collateral == DYNAMIC:
        lack = acct.requirement - pool.liquidation_threshold * max(acct.nav, 0.0)
    else:
        lack = max(acct.requirement - acct.nav, acct.locked_cash - acct.cash)
    return lack if lack > TOL * max(abs(acct.nav), 1.0) else 0.0


@njit(cache=True)
def reported_gap(acct, pool):
    """The gap a tick records: `gap`, and with full collateral the locked cash beyond the cash
    in hand (cash less what is lent out): collateral the money market has not repaid backs
    nothing until it does."""
    lack = gap(acct, pool)
    if pool.collateral == DYNAMIC:
        return lack
    beyond = acct.locked_cash - (acct.cash - acct.lent)
    return max(lack, beyond) if beyond > TOL * max(abs(acct.nav), 1.0) else lack


# --- trades -----------------------------------------------------------------------------------


@njit(cache=True)
def _locks_after(acct, kind, strike, q0, dq, mark, units, s_t, hedge):
    """(requirement, locked cash) with full collateral after one series moves from q0 by dq
    contracts (dq = 0: none does) and the hedge is `units`."""
    c0, p0, l0 = exposure(q0, kind, strike, mark)
    c1, p1, l1 = exposure(q0 + dq, kind, strike, mark)
    return full_locks(
        acct.short_calls - c0 + c1,
        acct.short_put_strikes - p0 + p1,
        acct.long_value - l0 + l1,
        units,
        s_t,
        hedge.instrument == PERP,
    )


@njit(cache=True)
def full_fill(acct, book, ser, i, direction, size, s_t, pool, hedge, cash, loss):
    """Largest x in [0, size] that keeps both the requirement within max_utilisation x NAV and
    free cash at or above zero (or no worse than now, for a pool already beyond them), the
    pool's cash taken as `cash` (acct.cash; less what it cannot recall from lending). `loss`:
    what each contract costs the pool at market prices beyond its mark (a quote on a stale
    oracle: the trader gets the gap, trade.trade): NAV and the cash received are that much less.

    Both are convex and piecewise linear in x, with kinks where the position crosses zero and
    where the short calls pass the long hedge units: evaluated at those points, the answer is
    a linear interpolation, exact to rounding."""
    q0, kind, strike, mark = book.qty[i], ser.kind[i], ser.strike[i], book.price[i]
    cap = pool.max_utilisation * acct.nav
    bound = max(acct.requirement - cap, acct.locked_cash - cash, 0.0)
    kink_zero = -q0 / direction
    others = acct.short_calls - exposure(q0, kind, strike, mark)[0]
    kink_cover = (-(max(acct.units, 0.0) - others) - q0) / direction if kind > 0 else -1.0
    a, b = min(kink_zero, kink_cover), max(kink_zero, kink_cover)
    best = size
    prev_x, prev_r, prev_f = 0.0, acct.requirement - cap, acct.locked_cash - cash
    for x in (a, b, size):
        if x <= prev_x or x > size:
            continue
        dq = direction * x
        req, locked = _locks_after(acct, kind, strike, q0, dq, mark, acct.units, s_t, hedge)
        # fees aside: they only add cash
        r = req - cap + pool.max_utilisation * x * loss
        f = locked - (cash - dq * mark - x * loss)
        for g, g0 in ((r, prev_r), (f, prev_f)):
            if g > bound * (1.0 + 1e-12) + 1e-9:
                best = min(best, prev_x + (bound - g0) * (x - prev_x) / (g - g0))
        if best < size:
            return max(best, 0.0)
        prev_x, prev_r, prev_f = x, r, f
    return size


@njit(cache=True)
def _dynamic_fits(book, acct, i, dq, x, mark, s_t, loss, pool):
    """Whether a fill of x contracts (dq signed) keeps the requirement within max_utilisation x
    the NAV it leaves (NAV less x x loss), or no higher than now for a pool already above."""
    budget = max(pool.max_utilisation * (acct.nav - x * loss), acct.requirement)
    return dynamic_after(book, i, dq, mark, 0.0, s_t, pool) <= budget


@njit(cache=True)
def _dynamic_fill(t, mk, ser, book, acct, i, direction, size, pool, loss):
    """Largest x in [0, size] whose requirement fits max_utilisation x NAV (or the current
    requirement, if already above it): convex in x, so bisection."""
    s_t, mark = mk.spot[t], book.price[i]
    tau = (ser.expiry[i] - mk.ts[t]) / NS_PER_YEAR
    scenario_prices(
        book.scen[i], ser.kind[i], s_t, ser.strike[i], tau, book.sigma[i], mk.rate[t], pool
    )
    if _dynamic_fits(book, acct, i, direction * size, size, mark, s_t, loss, pool):
        return size
    lo, hi = 0.0, size
    for _ in range(BISECTIONS):
        mid = 0.5 * (lo + hi)
        if _dynamic_fits(book, acct, i, direction * mid, mid, mark, s_t, loss, pool):
            lo = mid
        else:
            hi = mid
    return lo


@njit(cache=True)
def fill_size(t, mk, ser, book, acct, i, direction, size, pool, hedge, loss):
    """How much of a flow trade fits, its `loss` per contract (full_fill) counted. Less than
    DUST is rounding, not a fill."""
    if pool.collateral == DYNAMIC:
        filled = _dynamic_fill(t, mk, ser, book, acct, i, direction, size, pool, loss)
    else:
        filled = full_fill(
            acct, book, ser, i, direction, size, mk.spot[t], pool, hedge, acct.cash, loss
        )
    return filled if filled >= DUST else 0.0


@njit(cache=True)
def trade_position(book, acct, ser, i, dq, s_t, pool, hedge):
    """Book a flow fill of dq contracts of series i; the requirement follows (in dynamic mode
    from the scenario prices fill_size just computed)."""
    mark = book.price[i]
    if pool.collateral == DYNAMIC:
        for s in range(N_SCENARIOS):
            book.scen_pnl[s] += dq * (book.scen[i, s] - mark)
    change_position(book, acct, ser, i, dq, mark)
    update(book, acct, s_t, pool, hedge)


# --- hedges -----------------------------------------------------------------------------------


@njit(cache=True)
def _hedge_state(acct, x, s_t, iv, hedge, slip, mev):
    """(requirement, locked cash, cash, NAV, debt) after a hedge trade of x units (full-mode
    locks; the caller ignores them in dynamic mode)."""
    filled, _, slip_cost, gas, mev_cost, _, _, _, _ = slippage.execute(x, s_t, iv, slip, mev, acct)
    cost = slip_cost + gas + mev_cost
    cash = acct.cash - cash_paid(filled, s_t, cost, hedge)
    units = acct.units + filled
    req, locked = _locks_after(acct, 1.0, 0.0, 0.0, 0.0, 0.0, units, s_t, hedge)
    return req, locked, cash, acct.nav - cost, debt(cash - acct.lent, units, s_t, hedge)


@njit(cache=True)
def _hedge_excess(acct, x, s_t, iv, pool, hedge, slip, mev, held_back):
    """How far a hedge of x units takes the pool past what hedges may use: (full) requirement
    above NAV or free cash below `held_back` (lent cash it cannot recall; 0 without lending),
    (dynamic) leverage above max_leverage, as USD."""
    req, locked, cash, nav, owed = _hedge_state(acct, x, s_t, iv, hedge, slip, mev)
    if pool.collateral == DYNAMIC:
        return nav + owed - pool.max_leverage * nav
    return max(req - nav, locked - (cash - held_back))


@njit(cache=True)
def hedge_room(order, t, mk, acct, pool, hedge, slip, mev, held_back):
    """The part of a hedge order the collateral rule allows: a full-collateral pool never draws
    free cash below zero (below the lent cash it cannot recall, `held_back`) nor its
    requirement above NAV; a dynamic one never borrows beyond max_leverage. The order is cut,
    not refused, and never below what the pool already has."""
    if pool.collateral == DYNAMIC and not pool.max_leverage < math.inf:
        return order
    s_t, iv = mk.spot[t], mk.iv[t]
    bound = max(_hedge_excess(acct, 0.0, s_t, iv, pool, hedge, slip, mev, held_back), 0.0)
    if _hedge_excess(acct, order, s_t, iv, pool, hedge, slip, mev, held_back) <= bound:
        return order
    lo, hi = 0.0, 1.0
    for _ in range(BISECTIONS):
        mid = 0.5 * (lo + hi)
        if _hedge_excess(acct, mid * order, s_t, iv, pool, hedge, slip, mev, held_back) <= bound:
            lo = mid
        else:
            hi = mid
    return lo * order


@njit(cache=True)
def after_hedge(book, acct, filled, s_t, pool, hedge):
    """A hedge fill moves the requirement: the stress PnLs (dynamic) or the locks (full)."""
    if pool.collateral == DYNAMIC:
        hedge_scenario_pnl(book.scen_pnl, filled, s_t, pool)
    update(book, acct, s_t, pool, hedge)


# --- liquidation ------------------------------------------------------------------------------


@njit(cache=True)
def _record_close(closes, acct, ts, i, qty, mark, penalty, reason):
    if acct.n_closes < closes.shape[0]:
        rec = closes[acct.n_closes]
        rec.ts = ts
        rec.series = i
        rec.qty = qty
        rec.mark = mark
        rec.penalty = penalty
        rec.reason = reason - LIQUIDATION
    acct.n_closes += 1


@njit(cache=True)
def close_option(t, mk, ser, book, acct, row, records, i, x, reason, pool, hedge):
    """Close x contracts of series i at its mark plus liquidation_penalty (buy back a short,
    sell a long); the penalty is pnl_liquidation."""
    s_t, mark = mk.spot[t], book.price[i]
    direction = 1.0 if book.qty[i] < 0.0 else -1.0
    penalty = x * mark * pool.liquidation_penalty
    if pool.collateral == DYNAMIC:
        for s in range(N_SCENARIOS):
            book.scen_pnl[s] += direction * x * (book.scen[i, s] - mark)
    acct.cash -= direction * x * mark + penalty
    change_position(book, acct, ser, i, direction * x, mark)
    acct.nav -= penalty
    row.pnl_liquidation -= penalty
    records.series[i].pnl_liquidation -= penalty
    records.series[i].volume += x
    _record_close(records.closes, acct, mk.ts[t], i, direction * x, mark, penalty, reason)
    update(book, acct, s_t, pool, hedge)


@njit(cache=True)
def trade_fills(t, mk, book, acct, row, hedges, order, reason, pool, hedge, slip, mev):
    """Trade `order` units in as many fills as the venue needs (a slippage limit or a thin
    reserve cuts each), up to MAX_HEDGE_FILLS; returns what filled. A forced trade (an unwind,
    a re-hedge after forced closes) must not stop at the first fill's cut."""
    start = acct.units
    target = start + order  # exactly 0.0 for a whole unwind, so none is left from rounding
    for _ in range(MAX_HEDGE_FILLS):
        left = target - acct.units
        if abs(left) <= DUST:
            break
        filled = trade_underlying(t, mk, left, reason, acct, row, hedges, hedge, slip, mev)
        if filled == 0.0:
            break
        after_hedge(book, acct, filled, mk.spot[t], pool, hedge)
    return acct.units - start


@njit(cache=True)
def unwind_hedge(t, mk, book, acct, row, records, x, reason, pool, hedge, slip, mev):
    """Trade x units of the hedge back towards zero through the slippage model."""
    order = -math.copysign(x, acct.units)
    return trade_fills(
        t, mk, book, acct, row, records.hedges, order, reason, pool, hedge, slip, mev
    )


@njit(cache=True)
def _paired_units(book, acct, i, dq, paired):
    """The hedge trade that goes with closing dq contracts of series i: none, or (paired) the
    delta the contracts carried, towards zero and no further than the hedge goes. A covered
    pair (a short call and the long unit that covers it) frees collateral only together."""
    if not paired or acct.units == 0.0:
        return 0.0
    dunits = -dq * book.delta[i]
    if dunits * acct.units >= 0.0:
        return 0.0
    return math.copysign(min(abs(dunits), abs(acct.units)), dunits)


@njit(cache=True)
def _shortfall_after(i, x, paired, t, mk, ser, book, acct, reserve, cap, pool, hedge, slip, mev):
    """The shortfall after closing x contracts of series i (with its paired hedge), or x units
    of the hedge alone (i < 0)."""
    s_t, iv = mk.spot[t], mk.iv[t]
    if i >= 0:
        q0, mark, kind, strike = book.qty[i], book.price[i], ser.kind[i], ser.strike[i]
        dq = x if q0 < 0.0 else -x
        penalty = x * mark * pool.liquidation_penalty
        dunits = _paired_units(book, acct, i, dq, paired)
    else:
        q0, mark, kind, strike, dq, penalty = 0.0, 0.0, 1.0, 0.0, 0.0, 0.0
        dunits = -math.copysign(x, acct.units)
    filled, _, slip_cost, gas, mev_cost, _, _, _, _ = slippage.execute(
        dunits, s_t, iv, slip, mev, acct
    )
    cost = slip_cost + gas + mev_cost
    cash = acct.cash - dq * mark - penalty - cash_paid(filled, s_t, cost, hedge)
    nav = acct.nav - penalty - cost
    if pool.collateral == DYNAMIC:
        req = dynamic_after(book, i, dq, mark, filled, s_t, pool)
        return shortfall(req, req, cash, nav, reserve, cap, pool)
    req, locked = _locks_after(acct, kind, strike, q0, dq, mark, acct.units + filled, s_t, hedge)
    return shortfall(req, locked, cash, nav, reserve, cap, pool)


@njit(cache=True)
def _shortfall_pro_rata(f, t, mk, ser, book, acct, reserve, cap, pool, hedge, slip, mev):
    """The shortfall after closing the same fraction f of every position and of the hedge.
    Requirement and locks are homogeneous in the positions, so they shrink by (1 - f)."""
    s_t = mk.spot[t]
    gross = 0.0
    for j in range(acct.n_live):
        i = book.live[j]
        gross += abs(book.qty[i]) * book.price[i]
    penalty = f * gross * pool.liquidation_penalty
    filled, _, slip_cost, gas, mev_cost, _, _, _, _ = slippage.execute(
        -f * acct.units, s_t, mk.iv[t], slip, mev, acct
    )
    cost = slip_cost + gas + mev_cost
    cash = acct.cash + f * acct.book_value - penalty - cash_paid(filled, s_t, cost, hedge)
    req, locked = (1.0 - f) * acct.requirement, (1.0 - f) * acct.locked_cash
    return shortfall(req, locked, cash, acct.nav - penalty - cost, reserve, cap, pool)


@njit(cache=True)
def _close_amount(i, size, paired, t, mk, ser, book, acct, reserve, cap, pool, hedge, slip, mev):
    """How much of a candidate to close: the least amount that ends the shortfall, or, when no
    amount does, the one that minimises it (the shortfall is convex in the amount, so closing
    everything could make it worse)."""
    args = (t, mk, ser, book, acct, reserve, cap, pool, hedge, slip, mev)
    if _after(i, size, paired, args) <= 0.0:
        lo, hi = 0.0, size
        for _ in range(BISECTIONS):
            mid = 0.5 * (lo + hi)
            if _after(i, mid, paired, args) <= 0.0:
                hi = mid
            else:
                lo = mid
        return hi
    lo, hi = 0.0, size
    for _ in range(BISECTIONS):
        a = hi - GOLDEN * (hi - lo)
        b = lo + GOLDEN * (hi - lo)
        if _after(i, a, paired, args) <= _after(i, b, paired, args):
            hi = b
        else:
            lo = a
    return 0.5 * (lo + hi)


@njit(cache=True)
def _after(i, x, paired, args):
    """The shortfall after a candidate close: series i (paired or not), the hedge (i = -1), or
    every position pro rata (i = -3, x the fraction)."""
    if i == PRO_RATA:
        return _shortfall_pro_rata(x, *args)
    return _shortfall_after(i, x, paired, *args)


@njit(cache=True)
def shrink(t, mk, ser, book, acct, row, records, reserve, cap, reason, pool, hedge, slip, mev):
    """Close positions until the requirement fits cap x NAV (and, full, free cash stays at or
    above zero) with `reserve` set aside for a payout.

    Greedy: each round closes the candidate that cuts the shortfall most, by the least amount
    that ends it or, if none does, by the amount that minimises it. The candidates: each option
    series alone or with the hedge it carried (a covered call frees its unit only with it),
    scored by closing it whole; and the hedge alone, whose shortfall is V-shaped in the amount
    (a stale hedge is one risk, no hedge another), scored at its best amount. When no single
    close helps (the legs of a spread offset each other), a slice of every position is closed.
    It stops when nothing helps: the gap the record reports. `reason` (LIQUIDATION or
    WITHDRAWAL) labels the closes and hedge fills.
    """
    args = (t, mk, ser, book, acct, reserve, cap, pool, hedge, slip, mev)
    for _ in range(2 * acct.n_live + MAX_HEDGE_FILLS + 1):
        now = shortfall(acct.requirement, acct.locked_cash, acct.cash, acct.nav, reserve, cap, pool)
        tol = TOL * max(acct.nav, 1.0)
        if now <= tol:
            return
        best, best_paired, best_g, best_x = -2, False, now - tol, 0.0  # must help, not round
        for j in range(acct.n_live):
            i = book.live[j]
            size = abs(book.qty[i])
            for paired in (False, True):
                g = _shortfall_after(i, size, paired, *args)
                if g < best_g:
                    best, best_paired, best_g, best_x = i, paired, g, size
        if abs(acct.units) > DUST:
            x = _close_amount(THE_HEDGE, abs(acct.units), NOT_PAIRED, *args)
            g = _shortfall_after(THE_HEDGE, x, NOT_PAIRED, *args)
            if g < best_g:
                best, best_paired, best_g, best_x = -1, False, g, x
        if best == -2:  # no single close helps (a spread, say): close a slice of everything
            f = _close_amount(PRO_RATA, 1.0, NOT_PAIRED, *args)
            if _after(PRO_RATA, f, NOT_PAIRED, args) >= now - tol or f <= DUST:
                return
            close_pro_rata(t, mk, ser, book, acct, row, records, f, reason, pool, hedge, slip, mev)
            continue
        if best_x <= DUST:
            return
        if best < 0:
            if (
                unwind_hedge(
                    t, mk, book, acct, row, records, best_x, reason, pool, hedge, slip, mev
                )
                == 0
            ):
                return
            continue
        x = _close_amount(best, best_x, best_paired, *args)
        if x <= DUST:
            return
        dq = x if book.qty[best] < 0.0 else -x
        dunits = _paired_units(book, acct, best, dq, best_paired)
        if dunits != 0.0:
            # The hedge first, and the option only as far as the venue took its hedge: a
            # covered call bought back without selling its unit leaves the pool net long.
            filled = unwind_hedge(
                t, mk, book, acct, row, records, abs(dunits), reason, pool, hedge, slip, mev
            )
            x *= abs(filled) / abs(dunits)
            if x <= DUST:
                return
        close_option(t, mk, ser, book, acct, row, records, best, x, reason, pool, hedge)


@njit(cache=True)
def close_pro_rata(t, mk, ser, book, acct, row, records, f, reason, pool, hedge, slip, mev):
    """Close the fraction f of every option position and of the hedge."""
    j = acct.n_live - 1
    while j >= 0:  # backwards: a position closed whole leaves the live list
        i = book.live[j]
        close_option(
            t, mk, ser, book, acct, row, records, i, f * abs(book.qty[i]), reason, pool, hedge
        )
        j -= 1
    if acct.units != 0.0:
        unwind_hedge(
            t, mk, book, acct, row, records, f * abs(acct.units), reason, pool, hedge, slip, mev
        )


@njit(cache=True)
def close_all(t, mk, ser, book, acct, row, records, reason, pool, hedge, slip, mev):
    """Close every option and unwind the hedge (the last LP leaving)."""
    while acct.n_live > 0:
        i = book.live[acct.n_live - 1]
        close_option(t, mk, ser, book, acct, row, records, i, abs(book.qty[i]), reason, pool, hedge)
    if acct.units != 0.0:
        unwind_hedge(
            t, mk, book, acct, row, records, abs(acct.units), reason, pool, hedge, slip, mev
        )


# inline: a step of the tick; with nothing inlined the kernel is 1.23x the greeks floor
# instead of 1.04x (200k-tick board, bench)
@njit(cache=True, inline="always")
def liquidate(t, mk, ser, book, acct, row, records, pool, hedge, slip, mev):
    """Step 6, risk: a pool the market pushed beyond its collateral (gap > 0) liquidates back to
    max_utilisation in the same tick."""
    if acct.nav > 0.0 and gap(acct, pool) > 0.0:
        cap = pool.max_utilisation
        shrink(t, mk, ser, book, acct, row, records, 0.0, cap, LIQUIDATION, pool, hedge, slip, mev)


@njit(cache=True)
def payable(acct, s_t, last, held, pool):
    """The most an exit can pay now without breaking the collateral rule: the requirement
    within exit_cap x the NAV left, and (full) free cash, less lent cash the market cannot repay
    (`held`), covering it. The last LP's exit also leaves the value of what the venue could not
    take (the hedge units still held) in the pool until it is sold: a leaver is paid what the
    closes realised, never units the pool still holds."""
    room = acct.nav - acct.requirement / exit_cap(pool)
    if last:
        room = min(room, acct.nav - abs(acct.units) * s_t)
    if pool.collateral != DYNAMIC:
        room = min(room, acct.cash - acct.locked_cash - held)
    return room


@njit(cache=True)
def exit_cap(pool):
    """The utilisation a withdrawal must leave the pool within: what needs no liquidation
    afterwards (NAV itself with full collateral, the liquidation threshold with dynamic). It
    closes only what the payout forces; max_utilisation then keeps new flow out until the pool
    is back under it."""
    return pool.liquidation_threshold if pool.collateral == DYNAMIC else 1.0
