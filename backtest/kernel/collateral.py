"""Collateral: what the book ties up, and how much of a trade fits under max_utilisation.

`full`: a short call ties up one unit of spot, a short put its strike, a long option its mark
(capital already spent). `dynamic`: margin_multiplier x the worst loss of book + hedge over a
spot x vol stress grid, so hedges and offsetting options count.
"""

from numba import njit

from backtest.kernel.bs import bs_price
from backtest.kernel.types import N_SCENARIOS, SPOT_SHOCKS, VOL_SHOCKS

BISECTIONS = 50


@njit(cache=True)
def full_requirement(qty, kind, strike, spot, mark):
    """Full-collateral requirement of one series position."""
    if qty < 0.0:
        return -qty * (spot if kind > 0 else strike)
    return qty * mark


@njit(cache=True)
def full_fill(q0, direction, size, kind, strike, spot, mark, budget):
    """Largest x in [0, size] with full_requirement(q0 + direction*x) <= budget.

    The requirement is convex and piecewise linear in x (falls towards zero, then rises), so the
    answer is closed-form. budget >= the current requirement, so x = 0 always fits.
    """
    short_cost = spot if kind > 0 else strike
    x = 0.0
    base = full_requirement(q0, kind, strike, spot, mark)
    if q0 * direction < 0.0:  # first unwinds the position: always fits
        x = min(abs(q0), size)
        if x == size:
            return size
        base = 0.0
    slope = mark if direction > 0 else short_cost
    if slope <= 0.0:
        return size
    return min(size, x + max(budget - base, 0.0) / slope)


@njit(cache=True)
def scenario_prices(out, kind, spot, strike, tau, vol, rate, p):
    """Prices of one series under every stress scenario, into out[N_SCENARIOS]."""
    s = 0
    for i in range(SPOT_SHOCKS.shape[0]):
        shocked_spot = spot * (1.0 + SPOT_SHOCKS[i] * p.stress_spot)
        for j in range(VOL_SHOCKS.shape[0]):
            shocked_vol = vol * (1.0 + VOL_SHOCKS[j] * p.stress_vol)
            out[s] = bs_price(kind, shocked_spot, strike, tau, shocked_vol, rate)
            s += 1


@njit(cache=True)
def spot_shock(s, p):
    """Relative spot move of scenario s (scenarios run over spot shocks, then vol shocks)."""
    return SPOT_SHOCKS[s // VOL_SHOCKS.shape[0]] * p.stress_spot


@njit(cache=True)
def hedge_scenario_pnl(out, units, spot, p):
    """Add a hedge position's PnL under each scenario to out (vol shocks do not move it)."""
    for s in range(N_SCENARIOS):
        out[s] += units * spot * spot_shock(s, p)


@njit(cache=True)
def dynamic_requirement(scenario_pnl, extra, x, p):
    """margin_multiplier x worst loss when a trade adds x * extra[s] to each scenario's PnL."""
    worst = 0.0
    for s in range(N_SCENARIOS):
        loss = -(scenario_pnl[s] + x * extra[s])
        if loss > worst:
            worst = loss
    return p.margin_multiplier * worst


@njit(cache=True)
def dynamic_fill(scenario_pnl, extra, size, budget, p):
    """Largest x in [0, size] whose requirement fits the budget (convex in x, so bisection)."""
    if dynamic_requirement(scenario_pnl, extra, size, p) <= budget:
        return size
    lo, hi = 0.0, size
    for _ in range(BISECTIONS):
        mid = 0.5 * (lo + hi)
        if dynamic_requirement(scenario_pnl, extra, mid, p) <= budget:
            lo = mid
        else:
            hi = mid
    return lo
