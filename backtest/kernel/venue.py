"""The constant-product venue the pool hedges on ([slippage] model = "cpmm"), and its memory.

The venue holds X units of underlying and Y USD. Its depth is liquidity_usd at the reference
spot S: the curve is X Y = k = liquidity_usd^2 / (4 S), re-scaled as the market moves (the
venue's LPs keep a constant USD depth; a fixed k would make depth drift with the price level
over a year). Where on that curve the venue sits is its dislocation g = ln(venue price / S),
the one number it remembers: X = liquidity_usd / (2 S) e^(-g/2), Y = liquidity_usd / 2 e^(g/2).
The pool's own trades move along the curve (x y = k exactly; the venue's fee leaves the curve)
and so move g; between ticks arbitrageurs pull the venue back toward the reference spot,
g <- g 2^(-dt / arb_half_life); the market's own moves pass through (g is relative to S).
arb_half_life = 0 re-anchors the venue to spot before every trade: g is always 0.
"""

import math

from numba import njit

NS_PER_HOUR = 3_600_000_000_000


@njit(cache=True)
def reserves(spot, gap, slip):
    """(X units, Y USD) of the venue at reference spot `spot` and dislocation `gap`."""
    if gap == 0.0:  # the re-anchored pool, in the same arithmetic as ever
        return slip.liquidity_usd / (2.0 * spot), slip.liquidity_usd / 2.0
    half = 0.5 * slip.liquidity_usd
    return half / spot * math.exp(-0.5 * gap), half * math.exp(0.5 * gap)


@njit(cache=True)
def buy(x, y, units, gamma):
    """Take `units` out of reserves (x, y): (USD paid, x after, y after). gamma = 1 - fee: the
    fee part of what is paid leaves the curve, so x y is unchanged."""
    paid = y * units / (x - units) / gamma
    return paid, x - units, x * y / (x - units)


@njit(cache=True)
def sell(x, y, units, gamma):
    """Put `units` into reserves (x, y): (USD received, x after, y after); the fee part of the
    units leaves the curve."""
    units_in = units * gamma
    got = y * units_in / (x + units_in)
    return got, x + units_in, x * y / (x + units_in)


@njit(cache=True)
def gap_of(x, y, spot):
    """The dislocation of reserves (x, y) from the reference spot."""
    return math.log(y / x / spot)


@njit(cache=True)
def price(spot, gap):
    return spot * math.exp(gap)


@njit(cache=True)
def arbitrage(acct, dt_ns, slip):
    """Between ticks: arbitrageurs close the share 1 - 2^(-dt / arb_half_life) of the
    dislocation (all of it when the half-life is 0)."""
    if slip.arb_half_life <= 0.0:
        acct.venue_gap = 0.0
    elif acct.venue_gap != 0.0:
        acct.venue_gap *= 2.0 ** (-dt_ns / (slip.arb_half_life * NS_PER_HOUR))
