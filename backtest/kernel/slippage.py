"""What a hedge trade costs: price impact by model, gas, and MEV (a flat charge on large trades,
or a sandwich on a cpmm venue: kernel/mev.py).

A cost is always money the pool gives up to a sink outside it, so `slippage_cost >= 0`.
"""

import math

from numba import njit

from backtest.kernel import mev as sandwich
from backtest.kernel import venue
from backtest.kernel.types import MEV, SLIPPAGE, SUBMISSION

NONE, FIXED_BPS, SQRT_IMPACT, CPMM = (
    SLIPPAGE[k] for k in ("none", "fixed_bps", "sqrt_impact", "cpmm")
)
FLAT, SANDWICH = MEV["flat"], MEV["sandwich"]
PRIVATE = SUBMISSION["private"]
# A constant-product pool cannot sell more than its reserve; we let one hedge take at most this
# share of it, so a thin pool partly fills a large hedge instead of quoting an infinite price.
CPMM_MAX_TAKE = 0.5


@njit(cache=True)
def execute(qty, spot, iv, slip, mev, acct):
    """Fill a hedge of `qty` underlying (signed) at spot `spot`, on the venue as `acct` left it
    (its dislocation; whether the pool filled flow this tick, which makes the hedge visible to a
    sandwich attacker). Reads `acct`, never writes it.

    Returns (filled qty, average execution price without MEV, slippage cost, gas cost, mev cost,
    attacker's profit, venue price before, venue price after (NaN unless cpmm), sandwiched).
    """
    size = abs(qty)
    if size == 0.0:
        return 0.0, spot, 0.0, 0.0, 0.0, 0.0, math.nan, math.nan, False
    sign = 1.0 if qty > 0 else -1.0
    extra, attacker, sandwiched = 0.0, 0.0, False
    before, after = math.nan, math.nan
    if slip.model == FIXED_BPS:
        price = spot * (1.0 + sign * slip.bps * 1e-4)
    elif slip.model == SQRT_IMPACT:
        daily_vol = iv / math.sqrt(365.0)
        price = spot * (
            1.0 + sign * slip.impact_coeff * daily_vol * math.sqrt(size * spot / slip.adv_usd)
        )
    elif slip.model == CPMM:
        x, y = venue.reserves(spot, acct.venue_gap, slip)
        gamma = 1.0 - slip.fee_bps * 1e-4
        before = venue.price(spot, acct.venue_gap)
        if sign > 0:
            size = min(size, CPMM_MAX_TAKE * x)
        if mev.model == SANDWICH:
            size = sandwich.within_limit(x, y, size, sign, gamma, mev.max_slippage)
            if size <= 0.0:  # the fee alone breaks the limit: the hedge is not sent
                return 0.0, spot, 0.0, 0.0, 0.0, 0.0, before, before, False
        if sign > 0:
            usd, x_end, y_end = venue.buy(x, y, size, gamma)
        else:
            usd, x_end, y_end = venue.sell(x, y, size, gamma)
        price = usd / size
        if mev.model == SANDWICH and mev.submission != PRIVATE and acct.traded == 1:
            a, gross = sandwich.best_front_run(x, y, size, sign, gamma, mev.max_slippage)
            if gross > mev.attacker_cost_usd:
                victim, _, x_end, y_end = sandwich.attack(x, y, size, sign, gamma, a)
                extra = sign * (victim - usd)
                attacker = gross - mev.attacker_cost_usd
                sandwiched = True
        after = y_end / x_end
    else:
        price = spot
    filled = sign * size
    slippage_cost = filled * (price - spot)
    notional = size * spot
    if mev.model == FLAT:
        mev_cost = slip.mev_bps * 1e-4 * notional if notional > slip.mev_min_notional else 0.0
    elif mev.model == SANDWICH:
        mev_cost = extra + (
            mev.private_fee_bps * 1e-4 * notional if mev.submission == PRIVATE else 0.0
        )
    else:
        mev_cost = 0.0
    return filled, price, slippage_cost, slip.gas_usd, mev_cost, attacker, before, after, sandwiched


@njit(cache=True)
def proportional_cost(qty, spot, iv, slip, mev, acct):
    """All-in cost of a hedge of `qty` as a fraction of its notional (Whalley-Wilmott's lambda)."""
    if qty == 0.0:
        return 0.0
    filled, _, slippage_cost, gas, mev_cost, _, _, _, _ = execute(qty, spot, iv, slip, mev, acct)
    if filled == 0.0:
        return 0.0
    return (slippage_cost + gas + mev_cost) / (abs(filled) * spot)
