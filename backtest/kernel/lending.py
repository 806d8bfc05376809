"""Lent collateral: free cash supplied to a money market (docs/design.md, "Lent collateral").

The pool keeps `share` of its free cash supplied to a market whose borrowers' demand arrives
per tick with the market data, as a share u of the other suppliers' money (market_usd). The
pool's own supply L is part of the market: its utilisation is u' = u market_usd /
(market_usd + L), or the value a scripted squeeze pins it at, and the kinked rate (base_rate,
slope1 up to the kink, slope2 beyond it) follows u'. Borrowers pay borrow rate x u' x the
market's supply; suppliers share it pro rata, less the reserve's cut, so the pool never earns
more than the market's borrowers pay. Lent cash stays part of `cash` (the pool owns it: NAV
counts it); `lent` says which part of it is in the market. The market repays at most
recall_share x its free liquidity (market_usd + L) x (1 - u') in a tick; what lies beyond that
is stuck for the tick:
- a flow trade may not draw free cash below the stuck amount (the rest of the row is
  rejected, `collateral_locked`); a full-collateral hedge is cut at it;
- a due withdrawal that free cash less the stuck amount cannot pay waits in the queue (the
  last LP's, which takes every dollar, waits until nothing is stuck);
- at the end of the tick the pool recalls what its free cash no longer covers (everything it
  can, while an LP waits) and supplies more up to share x free cash, but adds nothing while
  u' is at or above max_supply_utilisation (a frozen market takes deposits it cannot repay).
When a squeeze ends, bad_debt_share of the lent cash is written off (`pnl_credit`): the
borrowers' defaults, socialised to the suppliers.
With share = 0 nothing here runs and nothing else changes.
"""

import math

from numba import njit

from backtest.kernel import collateral
from backtest.kernel.types import COLLATERAL
from backtest.kernel.valuation import NS_PER_YEAR

DYNAMIC = COLLATERAL["dynamic"]
BISECTIONS = 60
DUST = 1e-9  # contracts (book.DUST): a smaller fill is rounding
TOL = 1e-9  # relative to NAV: lent above free cash by less is rounding, not a blocked recall


@njit(cache=True)
def borrow_rate(u, lending):
    """The kinked borrow rate at utilisation u: base + slope1 u / kink up to the kink, then
    base + slope1 + slope2 (u - kink) / (1 - kink)."""
    if u <= lending.kink:
        return lending.base_rate + lending.slope1 * u / lending.kink
    return (
        lending.base_rate
        + lending.slope1
        + lending.slope2 * (u - lending.kink) / (1.0 - lending.kink)
    )


@njit(cache=True)
def supply_rate(u, lending):
    """What suppliers earn: the borrow rate on the borrowed share u, less the reserve's cut."""
    return borrow_rate(u, lending) * u * (1.0 - lending.reserve_factor)


@njit(cache=True)
def market_utilisation(t, mk, lent, lending):
    """The market's utilisation at tick t with `lent` of the pool's money in it: the borrowers'
    demand (util, a share of market_usd) over all the supply, or the squeeze's pinned value."""
    pin = mk.util_pin[t]
    if not math.isnan(pin):
        return pin
    return min(mk.util[t] * lending.market_usd / (lending.market_usd + lent), 1.0)


@njit(cache=True)
def stuck(acct):
    """Lent cash the market cannot repay this tick (0 with lending off)."""
    return max(acct.lent - acct.recall_room, 0.0)


# inline: a step of the tick (see carry.fund)
@njit(cache=True, inline="always")
def accrue(t, mk, acct, row, lending):
    """Over (t-1, t]: the cash lent at t-1 earns the supply rate of the market's utilisation
    at t-1 with it, and stays lent (the market's balance grows, as a supply token's does):
    cash and pnl_interest take it. What all the market's borrowers paid over the same time is
    lending_borrow_interest. A squeeze that ended at t writes off bad_debt_share of the lent
    cash (pnl_credit)."""
    if lending.share == 0.0:
        return
    dt = (mk.ts[t] - mk.ts[t - 1]) / NS_PER_YEAR
    u = market_utilisation(t - 1, mk, acct.lent, lending)
    earned = acct.lent * supply_rate(u, lending) * dt
    row.lending_borrow_interest = (
        borrow_rate(u, lending) * u * (lending.market_usd + acct.lent) * dt
    )
    acct.lent += earned
    acct.cash += earned
    row.pnl_interest += earned
    row.lending_yield = earned
    if not math.isnan(mk.util_pin[t - 1]) and math.isnan(mk.util_pin[t]):
        loss = lending.bad_debt_share * acct.lent
        acct.lent -= loss
        acct.cash -= loss
        row.pnl_credit -= loss


# inline: a step of the tick (see carry.fund)
@njit(cache=True, inline="always")
def open_tick(t, mk, acct, lending):
    """What the market can repay the pool this tick: its free liquidity, (market_usd + lent)
    x (1 - u'), of which the pool can take recall_share."""
    acct.recall_blocked = 0
    acct.lp_waiting = 0
    if lending.share == 0.0:
        return
    u = market_utilisation(t, mk, acct.lent, lending)
    acct.recall_room = lending.recall_share * (lending.market_usd + acct.lent) * (1.0 - u)


@njit(cache=True)
def _dynamic_free(s_t, book, acct, i, direction, x, loss, pool):
    """Free cash (dynamic mode) after a fill of x contracts of series i at its mark, less its
    loss per contract (collateral.full_fill)."""
    dq, mark = direction * x, book.price[i]
    return (
        acct.cash
        - dq * mark
        - x * loss
        - collateral.dynamic_after(book, i, dq, mark, 0.0, s_t, pool)
    )


@njit(cache=True)
def fill_cap(t, mk, ser, book, acct, i, direction, filled, pool, hedge, loss):
    """How much of a fill of `filled` contracts (what the collateral rule allows) keeps free
    cash at or above the stuck lent cash, or no lower than it is for a pool already below it;
    `loss` as in collateral.fill_size.
    Fees are left out, as in the collateral rule: they only add cash. `filled` when nothing
    is stuck."""
    held = stuck(acct)
    if held <= 0.0 or filled <= 0.0:
        return filled
    if pool.collateral == DYNAMIC:
        # Free cash cash - dq mark - requirement(dq) is concave in the amount (the
        # requirement is convex): bisection. fill_size priced series i's scenarios already.
        floor = min(acct.cash - acct.locked_cash, held)
        if _dynamic_free(mk.spot[t], book, acct, i, direction, filled, loss, pool) >= floor:
            return filled
        lo, hi = 0.0, filled
        for _ in range(BISECTIONS):
            mid = 0.5 * (lo + hi)
            if _dynamic_free(mk.spot[t], book, acct, i, direction, mid, loss, pool) >= floor:
                lo = mid
            else:
                hi = mid
        kept = lo
    else:
        # The collateral rule's own fill with the stuck cash left out of cash.
        kept = collateral.full_fill(
            acct, book, ser, i, direction, filled, mk.spot[t], pool, hedge, acct.cash - held, loss
        )
    return kept if kept >= DUST else 0.0


@njit(cache=True)
def can_pay(acct, wanted, last, lp):
    """Whether a due withdrawal of `wanted` shares can be paid now: always, unless lent cash is
    stuck; then only if free cash less the stuck part covers it (the pool does not force
    closes for an exit while its own cash is stuck), and never the last LP's."""
    held = stuck(acct)
    if held <= 0.0 or acct.shares <= 0.0 or acct.nav <= 0.0:
        return True
    shares = min(wanted, acct.shares)
    if shares >= acct.shares * (1.0 - last):
        return False
    value = shares * (acct.nav / acct.shares) * (1.0 - lp.withdrawal_fee)
    return value <= acct.cash - acct.locked_cash - held


# inline: a step of the tick (see carry.fund)
@njit(cache=True, inline="always")
def rebalance(t, mk, acct, row, lending):
    """End of the tick: recall what free cash no longer covers (or everything the market can
    repay while an LP waits, or the pool is empty or insolvent), or supply more, up to share x
    free cash, while the market's utilisation is under max_supply_utilisation; then the
    tick's lending record."""
    if lending.share == 0.0:
        return
    free = acct.cash - acct.locked_cash
    if acct.lp_waiting == 1 or acct.insolvent == 1 or acct.shares <= 0.0 or acct.nav <= 0.0:
        target = 0.0
    else:
        target = lending.share * max(free, 0.0)
    if acct.lent > target:
        back = min(acct.lent - target, max(acct.recall_room, 0.0))
        acct.lent -= back
        acct.recall_room -= back
    elif (
        acct.lent < target
        and market_utilisation(t, mk, acct.lent, lending) < lending.max_supply_utilisation
    ):
        # Freshly supplied cash is the market's free liquidity until someone borrows it.
        acct.recall_room += target - acct.lent
        acct.lent = target
    if acct.lent > max(free, 0.0) + TOL * max(abs(acct.nav), 1.0) or acct.lp_waiting == 1:
        acct.recall_blocked = 1
    row.lent = acct.lent
    row.lent_locked = stuck(acct)
    u = market_utilisation(t, mk, acct.lent, lending)
    row.lending_utilisation = u
    row.lending_rate = supply_rate(u, lending)
    row.recall_blocked = acct.recall_blocked
