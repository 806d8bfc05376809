"""What a hedge trade costs: price impact by model, gas, and MEV on large trades.

A cost is always money the pool gives up to a sink outside it, so `slippage_cost >= 0`.
"""

import math

from numba import njit

from backtest.kernel.types import SLIPPAGE

NONE, FIXED_BPS, SQRT_IMPACT, CPMM = (
    SLIPPAGE[k] for k in ("none", "fixed_bps", "sqrt_impact", "cpmm")
)
# A constant-product pool cannot sell more than its reserve; we let one hedge take at most this
# share of it, so a thin pool partly fills a large hedge instead of quoting an infinite price.
CPMM_MAX_TAKE = 0.5


@njit(cache=True)
def execute(qty, spot, iv, slip):
    """Fill a hedge of `qty` underlying (signed) at spot `spot`.

    Returns (filled qty, average execution price, slippage cost, gas cost, mev cost).
    """
    size = abs(qty)
    if size == 0.0:
        return 0.0, spot, 0.0, 0.0, 0.0
    sign = 1.0 if qty > 0 else -1.0
    if slip.model == FIXED_BPS:
        price = spot * (1.0 + sign * slip.bps * 1e-4)
    elif slip.model == SQRT_IMPACT:
        daily_vol = iv / math.sqrt(365.0)
        price = spot * (
            1.0 + sign * slip.impact_coeff * daily_vol * math.sqrt(size * spot / slip.adv_usd)
        )
    elif slip.model == CPMM:
        reserve_units = slip.liquidity_usd / (2.0 * spot)
        reserve_usd = slip.liquidity_usd / 2.0
        fee = slip.fee_bps * 1e-4
        if sign > 0:
            size = min(size, CPMM_MAX_TAKE * reserve_units)
            paid = reserve_usd * size / (reserve_units - size) / (1.0 - fee)
            price = paid / size
        else:
            units_in = size * (1.0 - fee)
            price = reserve_usd * units_in / (reserve_units + units_in) / size
    else:
        price = spot
    filled = sign * size
    slippage_cost = filled * (price - spot)
    notional = size * spot
    mev_cost = slip.mev_bps * 1e-4 * notional if notional > slip.mev_min_notional else 0.0
    return filled, price, slippage_cost, slip.gas_usd, mev_cost


@njit(cache=True)
def proportional_cost(qty, spot, iv, slip):
    """All-in cost of a hedge of `qty` as a fraction of its notional (Whalley-Wilmott's lambda)."""
    if qty == 0.0:
        return 0.0
    filled, _, slippage_cost, gas, mev = execute(qty, spot, iv, slip)
    return (slippage_cost + gas + mev) / (abs(filled) * spot)
