"""Step 5, hedge: the policy looks at net delta and decides how much underlying to trade; with
latency the order fills `latency` ticks later at that tick's price."""

import math

from numba import njit

from backtest.kernel import collateral
from backtest.kernel.book import DUST
from backtest.kernel.instrument import trade_underlying
from backtest.kernel.lending import stuck
from backtest.kernel.slippage import proportional_cost
from backtest.kernel.types import POLICY, REBALANCE

NONE, EVERY_TRADE, THRESHOLD, PERIODIC, WHALLEY_WILMOTT = (
    POLICY[k] for k in ("none", "every_trade", "threshold", "periodic", "whalley_wilmott")
)
TO_EDGE = REBALANCE["edge"]


@njit(cache=True)
def whalley_wilmott_band(book_gamma, spot, iv, nav, net_delta, hedge, slip, mev, acct):
    """Half-width in underlying of the no-trade band around zero net delta.

    Whalley & Wilmott (1997): (3/2 * lambda * S * Gamma^2 / gamma_abs)^(1/3), with lambda the
    proportional cost of the trade that would close the gap and gamma_abs = risk_aversion / NAV,
    so `risk_aversion` is relative risk aversion and the band does not depend on pool size.
    """
    lam = proportional_cost(-net_delta, spot, iv, slip, mev, acct)
    if lam <= 0.0 or nav <= 0.0:
        return 0.0
    return (1.5 * lam * spot * book_gamma * book_gamma * nav / hedge.risk_aversion) ** (1.0 / 3.0)


@njit(cache=True)
def decide(net_delta, spot, iv, nav, book_gamma, traded, bucket_changed, hedge, slip, mev, acct):
    """Underlying to trade (signed) under the policy; 0.0 means stay."""
    if net_delta == 0.0:
        return 0.0
    if hedge.policy == EVERY_TRADE:
        return -net_delta if traded else 0.0
    if hedge.policy == PERIODIC:
        return -net_delta if bucket_changed else 0.0
    if hedge.policy == THRESHOLD:
        if nav <= 0.0:
            return -net_delta
        band = hedge.threshold * nav / spot
        if abs(net_delta) <= band:
            return 0.0
        edge = math.copysign(band, net_delta) if hedge.rebalance_to == TO_EDGE else 0.0
        return edge - net_delta
    if hedge.policy == WHALLEY_WILMOTT:
        band = whalley_wilmott_band(
            abs(book_gamma), spot, iv, nav, net_delta, hedge, slip, mev, acct
        )
        if abs(net_delta) <= band:
            return 0.0
        return math.copysign(band, net_delta) - net_delta
    return 0.0


@njit(cache=True)
def capped(order, hedge_after_pending, spot, hedge):
    """Apply hedge_cap (position) and max_notional_per_step (trade size) to an order."""
    target = hedge_after_pending + order
    target = min(max(target, -hedge.hedge_cap), hedge.hedge_cap)
    order = target - hedge_after_pending
    max_units = hedge.max_notional_per_step / spot
    return min(max(order, -max_units), max_units)


# inline: a step of the tick; with nothing inlined the kernel is 1.23x the greeks floor
# instead of 1.04x (200k-tick board, bench)
@njit(cache=True, inline="always")
def hedge_step(t, mk, pending, book, acct, row, hedges, pool, hedge, slip, mev):
    """Fill what was decided `latency` (plus its random delay) ticks ago at this tick's price,
    then decide. A pool its
    LPs have left trades no more: its orders in flight are cancelled. An order worth less than
    [mev] min_hedge_usd at this tick's spot is not sent (its delta stays open)."""
    if acct.shares <= 0.0:
        pending.qty[:] = 0.0
        return
    s_t = mk.spot[t]
    slots = pending.qty.shape[0]
    slot = t % slots
    order = pending.qty[slot]
    reason = pending.reason[slot]
    pending.qty[slot] = 0.0
    bucket = mk.ts[t] // hedge.interval
    in_flight = pending.qty.sum()
    units = acct.units
    net = acct.book_delta + units + order + in_flight
    if mk.oracle.shape[0] > 0:  # the pool measures its options' delta at the oracle's price
        net += acct.book_gamma * (mk.oracle[t] - s_t)
    traded = acct.traded == 1
    new_bucket = bucket != acct.last_bucket
    decided = decide(
        net, s_t, mk.iv[t], acct.nav, acct.book_gamma, traded, new_bucket, hedge, slip, mev, acct
    )
    acct.last_bucket = bucket
    if decided != 0.0:
        decided = capped(decided, units + order + in_flight, s_t, hedge)
    delay = hedge.latency + (mk.delay[t] if mk.delay.shape[0] > 0 else 0)
    if delay == 0:
        if decided != 0.0:  # with a random delay, an order due now may be there already
            order += decided
            reason = hedge.policy
    elif decided != 0.0:
        later = (t + delay) % slots
        pending.qty[later] += decided
        pending.reason[later] = hedge.policy
    if order != 0.0 and abs(order) * s_t < mev.min_hedge_usd:
        order = 0.0  # too small to send: the delta stays open
    if order != 0.0:
        order = collateral.hedge_room(order, t, mk, acct, pool, hedge, slip, mev, stuck(acct))
    if order != 0.0:
        filled = trade_underlying(t, mk, order, reason, acct, row, hedges, hedge, slip, mev)
        collateral.after_hedge(book, acct, filled, s_t, pool, hedge)


@njit(cache=True)
def restore_delta(t, mk, book, acct, row, hedges, net_before, reason, pool, hedge, slip, mev):
    """Closes the pool did not choose (a liquidation's, an LP exit's) must not leave the
    stayers more exposed than the policy had them: whatever the policy (every one but "none",
    which never holds a hedge), the net delta they added beyond |net_before| is re-hedged in
    the same tick, through the venue and within the collateral rule (an exit's before its
    payout, which then pays for it). A pool its last LP is leaving has no stayers."""
    if hedge.policy == NONE or acct.shares <= 0.0 or acct.winding_down == 1:
        return
    net = acct.book_delta + acct.units
    if abs(net) <= abs(net_before) + DUST:
        return
    order = math.copysign(abs(net_before), net) - net
    order = collateral.hedge_room(order, t, mk, acct, pool, hedge, slip, mev, stuck(acct))
    if order != 0.0:
        collateral.trade_fills(
            t, mk, book, acct, row, hedges, order, reason, pool, hedge, slip, mev
        )
