"""Sandwich attacks on the pool's hedges ([mev] model = "sandwich", on a cpmm venue).

The pool's hedge is a public swap with a slippage tolerance: it executes only if its average
price is within max_slippage of the venue price it was quoted (the price before it). An attacker
who sees it (a hedge in a tick where the pool filled flow: the option trade is public and the
hedge that follows it predictable) buys ahead of a buy (sells ahead of a sell) by a units, lets
the hedge fill at the worse price, and trades the a units back. The tolerance bounds a: the
largest front-run that leaves the hedge's average price at its limit has a closed form. The
attacker picks the a in [0, a_max] that earns most (a golden-section search of fixed length,
then the bound itself, which is where the profit usually peaks) and attacks only when that
profit beats attacker_cost_usd (gas and tip). The pool's extra cost is what the hedge paid over
(or received under) the same swap without the front-run.

Defences: a hedge whose own impact already exceeds the tolerance is cut to the part that fits
(no room is left for a front-run: the hedge is cut, not sandwiched, and the delta stays open);
private submission (no one sees the hedge; it pays private_fee_bps on its notional instead).
"""

import math

from numba import njit

from backtest.kernel.venue import buy, sell

GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0
SEARCH_STEPS = 60


@njit(cache=True)
def within_limit(x, y, size, sign, gamma, max_slippage):
    """The largest part of an order of `size` units (sign +1 buys) whose average price on
    reserves (x, y) stays within max_slippage of the price before it, y / x."""
    if sign > 0:
        fits = x * (1.0 - 1.0 / (gamma * (1.0 + max_slippage)))
    else:
        fits = x * (1.0 / (1.0 - max_slippage) - 1.0 / gamma)
    return min(size, max(fits, 0.0))


@njit(cache=True)
def max_front_run(x, y, size, sign, gamma, max_slippage):
    """The largest front-run after which a hedge of `size` still fills within its limit (the
    limit is (1 +- max_slippage) times the price before the front-run, y / x)."""
    if sign > 0:
        # the hedge's average price after a front-run leaves x1 units: k / (x1 (x1 - q) gamma)
        x1 = 0.5 * (size + math.sqrt(size * size + 4.0 * x * x / (gamma * (1.0 + max_slippage))))
        return max(x - x1, 0.0)
    gq = gamma * size
    x1 = 0.5 * (-gq + math.sqrt(gq * gq + 4.0 * x * x * gamma / (1.0 - max_slippage)))
    return max((x1 - x) / gamma, 0.0)


@njit(cache=True)
def attack(x, y, size, sign, gamma, a):
    """Front-run a units, the hedge of `size`, back-run. Returns (what the hedge paid (buy) or
    received (sell) in USD, the attacker's gross profit, reserves after)."""
    if sign > 0:
        a_paid, x1, y1 = buy(x, y, a, gamma)
        victim, x2, y2 = buy(x1, y1, size, gamma)
        a_got, x3, y3 = sell(x2, y2, a, gamma)
    else:
        a_got, x1, y1 = sell(x, y, a, gamma)
        victim, x2, y2 = sell(x1, y1, size, gamma)
        a_paid, x3, y3 = buy(x2, y2, a, gamma)
    return victim, a_got - a_paid, x3, y3


@njit(cache=True)
def best_front_run(x, y, size, sign, gamma, max_slippage):
    """(front-run units, attacker's gross profit) that earns most within the hedge's limit."""
    hi_bound = max_front_run(x, y, size, sign, gamma, max_slippage)
    if hi_bound <= 0.0:
        return 0.0, 0.0
    lo, hi = 0.0, hi_bound
    for _ in range(SEARCH_STEPS):
        u = hi - GOLDEN * (hi - lo)
        w = lo + GOLDEN * (hi - lo)
        if attack(x, y, size, sign, gamma, u)[1] >= attack(x, y, size, sign, gamma, w)[1]:
            hi = w
        else:
            lo = u
    a = 0.5 * (lo + hi)
    profit = attack(x, y, size, sign, gamma, a)[1]
    at_bound = attack(x, y, size, sign, gamma, hi_bound)[1]
    if at_bound > profit:
        return hi_bound, at_bound
    return a, profit
