"""Price-elastic traders: the reference venue a trader could go to instead, and the chance he
takes the pool's all-in price rather than its price (docs/design.md, "Price-elastic traders")."""

import math

from numba import njit

from backtest.kernel.valuation import MIN_VOL, market_vol, price_at

VOL_POINT = 0.01
MAX_EXPONENT = 700.0  # exp above this overflows a float: acceptance is 0 to the last digit


@njit(cache=True)
def reference_price(i, side, s_t, r_t, atm, snap, ser, surf, terms, book, pricing, flow_params):
    """What the reference venue charges a buyer (side +1) or pays a seller (side -1) per
    contract: Black-Scholes at the market's vol of series i (no pool impact), that vol plus
    reference_spread_vol for a buyer, minus it for a seller (floored like every vol)."""
    vol = market_vol(i, snap, atm, ser, surf, terms, pricing)
    vol = max(vol + side * flow_params.reference_spread_vol, MIN_VOL)
    return price_at(i, s_t, r_t, vol, ser, terms, book)


@njit(cache=True)
def acceptance(excess, vega, elasticity):
    """p = min(1, 2 / (1 + exp(elasticity * x))), x = excess / (vega * VOL_POINT): the pool's
    all-in price over the reference in vol points of the series. A price at or better than the
    reference is always taken; the chance falls like a logit beyond it."""
    if excess <= 0.0:
        return 1.0
    if vega <= 0.0:
        return 0.0  # a price above the reference on a series with no vega left
    z = elasticity * excess / (vega * VOL_POINT)
    if z > MAX_EXPONENT:
        return 0.0
    return 2.0 / (1.0 + math.exp(z))
