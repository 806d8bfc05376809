"""Hedge policies: given net delta, how much underlying to trade now (before caps)."""

import math

from numba import njit

from backtest.kernel.slippage import proportional_cost
from backtest.kernel.types import POLICY, REBALANCE

EVERY_TRADE, THRESHOLD, PERIODIC, WHALLEY_WILMOTT = (
    POLICY[k] for k in ("every_trade", "threshold", "periodic", "whalley_wilmott")
)
TO_EDGE = REBALANCE["edge"]


@njit(cache=True)
def whalley_wilmott_band(book_gamma, spot, iv, nav, net_delta, p):
    """Half-width in underlying of the no-trade band around zero net delta.

    Whalley & Wilmott (1997): (3/2 * lambda * S * Gamma^2 / gamma_abs)^(1/3), with lambda the
    proportional cost of the trade that would close the gap and gamma_abs = risk_aversion / NAV,
    so `risk_aversion` is relative risk aversion and the band does not depend on pool size.
    """
    lam = proportional_cost(-net_delta, spot, iv, p)
    if lam <= 0.0 or nav <= 0.0:
        return 0.0
    return (1.5 * lam * spot * book_gamma * book_gamma * nav / p.risk_aversion) ** (1.0 / 3.0)


@njit(cache=True)
def decide(net_delta, spot, iv, nav, book_gamma, traded, bucket_changed, p):
    """Underlying to trade (signed) under the policy; 0.0 means stay."""
    if net_delta == 0.0:
        return 0.0
    if p.policy == EVERY_TRADE:
        return -net_delta if traded else 0.0
    if p.policy == PERIODIC:
        return -net_delta if bucket_changed else 0.0
    if p.policy == THRESHOLD:
        if nav <= 0.0:
            return -net_delta
        band = p.threshold * nav / spot
        if abs(net_delta) <= band:
            return 0.0
        edge = math.copysign(band, net_delta) if p.rebalance_to == TO_EDGE else 0.0
        return edge - net_delta
    if p.policy == WHALLEY_WILMOTT:
        band = whalley_wilmott_band(abs(book_gamma), spot, iv, nav, net_delta, p)
        if abs(net_delta) <= band:
            return 0.0
        return math.copysign(band, net_delta) - net_delta
    return 0.0


@njit(cache=True)
def capped(order, hedge_after_pending, spot, p):
    """Apply hedge_cap (position) and max_notional_per_step (trade size) to an order."""
    target = hedge_after_pending + order
    target = min(max(target, -p.hedge_cap), p.hedge_cap)
    order = target - hedge_after_pending
    max_units = p.max_notional_per_step / spot
    return min(max(order, -max_units), max_units)
