"""The event loop: one market path through the pool, tick by tick, in docs/design.md's order.

Mark -> settle -> fund -> trade -> hedge -> risk -> LP flows -> record. Every money movement lands
in exactly one pnl_* component or in lp_flow, so nav[t] - nav[t-1] == pnl_total[t] + lp_flow[t]
holds to rounding; the tests rebuild NAV from trades, hedges and payouts and check it.

Each step is its own kernel function over three bundles of state, updated in place:
`book` = (qty, val, val_tick, live, scen, scen_pnl, extra) per option series; `st` = (acct, ist,
pnl), the scalar account state as float and integer arrays plus this tick's PnL components; and
`out` = (steps, trades, hedges, series_out), the preallocated records.
"""

import math

import numpy as np
from numba import njit, prange

from backtest.kernel import collateral, hedge, slippage
from backtest.kernel.bs import bs_greeks
from backtest.kernel.surface import surface_vol
from backtest.kernel.types import (
    COLLATERAL,
    INSTRUMENT,
    LIQUIDATION,
    N_SCENARIOS,
    POLICY,
    REJECT_HALTED,
    REJECT_INSOLVENT,
    REJECT_NONE,
    REJECT_UTILISATION,
)

NS_PER_YEAR = 365.0 * 86_400.0 * 1e9
NS_PER_HOUR = 3_600.0 * 1e9
MIN_VOL = 0.01  # floor of the smile, so a steep skew never prices at zero vol
DUST = 1e-9  # positions smaller than this (contracts) are closed out
DYNAMIC = COLLATERAL["dynamic"]
PERP = INSTRUMENT["perp"]
NO_POLICY = POLICY["none"]

# Columns of the per-series valuation cache.
PRICE, DELTA, GAMMA, VEGA, THETA, VANNA, VOLGA, SIGMA = range(8)
# The per-tick PnL accumulator, in the order of types.PNL_COMPONENTS.
(
    P_DELTA,
    P_GAMMA,
    P_VEGA,
    P_THETA,
    P_VANNA,
    P_VOLGA,
    P_RESIDUAL,
    P_FEES,
    P_HEDGE_COST,
    P_FUNDING,
    P_INTEREST,
    P_LIQUIDATION,
) = range(12)
N_PNL = 12
# Float account state.
(
    CASH,
    UNITS,
    NAV,
    REQ,
    FREE_PREV,
    BOOK_VALUE,
    BOOK_DELTA,
    BOOK_GAMMA,
    BOOK_VEGA,
    SHARES,
    PEAK_NPS,
    RUN_LEVEL,
    LP_FLOW,
) = range(13)
N_ACCT = 13
# Integer state.
N_LIVE, FLOW_AT, N_HEDGES, LAST_BUCKET, INSOLVENT, HALT_UNTIL, TRADED, HALTED = range(8)
WQ_HEAD, WQ_TAIL, CB_FROM, LP_AT = range(8, 12)
N_IST = 12


@njit(cache=True, inline="always")
def series_vol(
    i,
    now,
    s_t,
    atm,
    r_t,
    snap,
    expiry,
    strike,
    expiry_id,
    strike_id,
    surf,
    imp_expiry,
    imp_strike,
    p,
):
    """Vol of series i at this tick: the surface (or ATM iv + smile) plus inventory impact."""
    tau = (expiry[i] - now) / NS_PER_YEAR
    k = math.log(strike[i] / (s_t * math.exp(r_t * max(tau, 0.0))))
    if snap >= 0:
        base = surface_vol(surf[2][snap], surf[0], surf[1], max(tau, 1e-9), k)
    else:
        base = atm + p.skew_slope * k + p.smile_curvature * k * k
    return max(base + imp_expiry[expiry_id[i]] + imp_strike[strike_id[i]], MIN_VOL)


@njit(cache=True, inline="always")
def value_series(
    val,
    i,
    now,
    s_t,
    atm,
    r_t,
    snap,
    expiry,
    strike,
    kind,
    expiry_id,
    strike_id,
    surf,
    imp_e,
    imp_s,
    p,
):
    """Revalue series i at this tick into val[i].

    Called per live series per tick, so it takes arrays already unpacked by the caller (tuple
    unpacking costs reference counting on every call) and the tick's market as scalars.
    """
    vol = series_vol(
        i, now, s_t, atm, r_t, snap, expiry, strike, expiry_id, strike_id, surf, imp_e, imp_s, p
    )
    tau = (expiry[i] - now) / NS_PER_YEAR
    price, delta, gamma, vega, theta, vanna, volga = bs_greeks(
        kind[i], s_t, strike[i], tau, vol, r_t
    )
    val[i, PRICE] = price
    val[i, DELTA] = delta
    val[i, GAMMA] = gamma
    val[i, VEGA] = vega
    val[i, THETA] = theta
    val[i, VANNA] = vanna
    val[i, VOLGA] = volga
    val[i, SIGMA] = vol


@njit(cache=True)
def drop_live(live, ist, i):
    for j in range(ist[N_LIVE]):
        if live[j] == i:
            ist[N_LIVE] -= 1
            live[j] = live[ist[N_LIVE]]
            return


@njit(cache=True, inline="always")
def change_position(i, dq, mark_, book, acct, ist):
    """Move series i's position by dq at its mark: greeks, live list and dust follow."""
    qty, val, _, live, _, _, _ = book
    was_open = qty[i] != 0.0
    qty[i] += dq
    if abs(qty[i]) < DUST:
        acct[CASH] += qty[i] * mark_  # closing dust at its mark leaves NAV unchanged
        qty[i] = 0.0
    if not was_open and qty[i] != 0.0:
        live[ist[N_LIVE]] = i
        ist[N_LIVE] += 1
    elif was_open and qty[i] == 0.0:
        drop_live(live, ist, i)
    acct[BOOK_VALUE] += dq * mark_
    acct[BOOK_DELTA] += dq * val[i, DELTA]
    acct[BOOK_GAMMA] += dq * val[i, GAMMA]
    acct[BOOK_VEGA] += dq * val[i, VEGA]


@njit(cache=True, inline="always")
def mark(t, mk, ser, surf, impact, book, st, series_out, p):
    """Step 1: revalue the book held since t-1 and attribute the move, series by series."""
    ts, spot, iv, rate, _, surf_idx = mk
    expiry, strike, kind, expiry_id, strike_id = ser
    imp_e, imp_s = impact
    now, s_t, atm, r_t, snap = ts[t], spot[t], iv[t], rate[t], surf_idx[t]
    qty, val, val_tick, live, _, _, _ = book
    acct, ist, pnl = st
    dt = (ts[t] - ts[t - 1]) / NS_PER_YEAR
    ds = spot[t] - spot[t - 1]
    units = acct[UNITS]
    pnl[P_DELTA] += units * ds
    if p.instrument == PERP:
        acct[CASH] += units * ds  # variation margin settles the perp's move in cash
    if p.iv_impact > 0.0 or p.skew_impact > 0.0:
        decay = 0.5 ** ((ts[t] - ts[t - 1]) / NS_PER_HOUR / p.impact_half_life)
        impact[0][:] *= decay
        impact[1][:] *= decay
    for j in range(ist[N_LIVE]):
        i = live[j]
        q = qty[i]
        old_price = val[i, PRICE]
        d_ = val[i, DELTA]
        g_ = val[i, GAMMA]
        v_ = val[i, VEGA]
        th_ = val[i, THETA]
        va_ = val[i, VANNA]
        vo_ = val[i, VOLGA]
        old_vol = val[i, SIGMA]
        value_series(
            val,
            i,
            now,
            s_t,
            atm,
            r_t,
            snap,
            expiry,
            strike,
            kind,
            expiry_id,
            strike_id,
            surf,
            imp_e,
            imp_s,
            p,
        )
        val_tick[i] = t
        dv = val[i, SIGMA] - old_vol
        c_delta = q * d_ * ds
        c_gamma = 0.5 * q * g_ * ds * ds
        c_vega = q * v_ * dv
        c_theta = q * th_ * dt
        c_vanna = q * va_ * ds * dv
        c_volga = 0.5 * q * vo_ * dv * dv
        c_res = q * (val[i, PRICE] - old_price) - (
            c_delta + c_gamma + c_vega + c_theta + c_vanna + c_volga
        )
        pnl[P_DELTA] += c_delta
        pnl[P_GAMMA] += c_gamma
        pnl[P_VEGA] += c_vega
        pnl[P_THETA] += c_theta
        pnl[P_VANNA] += c_vanna
        pnl[P_VOLGA] += c_volga
        pnl[P_RESIDUAL] += c_res
        rec = series_out[i]
        rec.pnl_delta += c_delta
        rec.pnl_gamma += c_gamma
        rec.pnl_vega += c_vega
        rec.pnl_theta += c_theta
        rec.pnl_vanna += c_vanna
        rec.pnl_volga += c_volga
        rec.pnl_residual += c_res


@njit(cache=True, inline="always")
def settle(t, mk, ser, book, acct, ist):
    """Step 2: expired series pay intrinsic at spot[t], which is already their mark."""
    ts = mk[0]
    expiry = ser[0]
    qty, val, _, live, _, _, _ = book
    j = ist[N_LIVE] - 1
    while j >= 0:
        i = live[j]
        if expiry[i] <= ts[t]:
            acct[CASH] += qty[i] * val[i, PRICE]
            qty[i] = 0.0
            ist[N_LIVE] -= 1
            live[j] = live[ist[N_LIVE]]
        j -= 1


@njit(cache=True, inline="always")
def fund(t, mk, acct, pnl, p):
    """Step 3: idle yield on free capital and perp funding over (t-1, t]."""
    ts, spot, _, _, funding, _ = mk
    dt = (ts[t] - ts[t - 1]) / NS_PER_YEAR
    interest = p.idle_yield * max(acct[FREE_PREV], 0.0) * dt
    paid = -acct[UNITS] * spot[t - 1] * funding[t - 1] * dt if p.instrument == PERP else 0.0
    acct[CASH] += interest + paid
    pnl[P_INTEREST] += interest
    pnl[P_FUNDING] += paid


@njit(cache=True, inline="always")
def book_state(t, mk, ser, book, acct, ist, p):
    """NAV, book greeks and collateral requirement of the book at t (scenario PnLs if dynamic)."""
    ts, spot, _, rate, _, _ = mk
    expiry, strike, kind, _, _ = ser
    qty, val, _, live, scen, scen_pnl, extra = book
    s_t = spot[t]
    dynamic = p.collateral == DYNAMIC
    value = 0.0
    delta = 0.0
    gamma = 0.0
    vega = 0.0
    requirement = 0.0
    if dynamic:
        scen_pnl[:] = 0.0
        collateral.hedge_scenario_pnl(scen_pnl, acct[UNITS], s_t, p)
    for j in range(ist[N_LIVE]):
        i = live[j]
        q = qty[i]
        value += q * val[i, PRICE]
        delta += q * val[i, DELTA]
        gamma += q * val[i, GAMMA]
        vega += q * val[i, VEGA]
        if dynamic:
            tau = (expiry[i] - ts[t]) / NS_PER_YEAR
            collateral.scenario_prices(
                scen[i], kind[i], s_t, strike[i], tau, val[i, SIGMA], rate[t], p
            )
            for s in range(N_SCENARIOS):
                scen_pnl[s] += q * (scen[i, s] - val[i, PRICE])
        else:
            requirement += collateral.full_requirement(q, kind[i], strike[i], s_t, val[i, PRICE])
    if dynamic:
        requirement = collateral.dynamic_requirement(scen_pnl, extra, 0.0, p)
    acct[BOOK_VALUE] = value
    acct[BOOK_DELTA] = delta
    acct[BOOK_GAMMA] = gamma
    acct[BOOK_VEGA] = vega
    acct[REQ] = requirement
    acct[NAV] = acct[CASH] + value + (0.0 if p.instrument == PERP else acct[UNITS] * s_t)


@njit(cache=True, inline="always")
def circuit_breaker(t, mk, log_iv_sum, acct, ist, p):
    """Halt new flow for cb_hours when iv strays from its trailing geometric mean by more than
    cb_iv_move (vol points), or when free capital falls below cb_min_free x NAV."""
    ts, _, iv, _, _, _ = mk
    window = p.cb_hours * NS_PER_HOUR
    if p.cb_iv_move > 0.0:
        while ist[CB_FROM] < t and ts[ist[CB_FROM]] < ts[t] - window:
            ist[CB_FROM] += 1
        n = t - ist[CB_FROM]
        if n > 0:
            mean = math.exp((log_iv_sum[t] - log_iv_sum[ist[CB_FROM]]) / n)
            if abs(iv[t] - mean) > p.cb_iv_move:
                ist[HALT_UNTIL] = ts[t] + np.int64(window)
    free = (acct[NAV] - acct[REQ]) / acct[NAV] if acct[NAV] > 0.0 else 0.0
    if p.cb_min_free > 0.0 and free < p.cb_min_free:
        ist[HALT_UNTIL] = ts[t] + np.int64(window)
    ist[HALTED] = 1 if ts[t] < ist[HALT_UNTIL] else 0


@njit(cache=True, inline="always")
def fill_size(i, t, mk, ser, book, acct, direction, size, p):
    """How much of a trade fits under max_utilisation x NAV (or the current requirement, if the
    pool is already above it: risk-reducing trades always fit). Less than DUST is rounding left
    by the cap arithmetic, not a fill."""
    ts, spot, _, rate, _, _ = mk
    expiry, strike, kind, _, _ = ser
    qty, val, _, _, scen, scen_pnl, extra = book
    s_t = spot[t]
    mark_ = val[i, PRICE]
    budget = max(p.max_utilisation * acct[NAV], acct[REQ])
    if p.collateral == DYNAMIC:
        tau = (expiry[i] - ts[t]) / NS_PER_YEAR
        collateral.scenario_prices(scen[i], kind[i], s_t, strike[i], tau, val[i, SIGMA], rate[t], p)
        for s in range(N_SCENARIOS):
            extra[s] = direction * (scen[i, s] - mark_)
        filled = collateral.dynamic_fill(scen_pnl, extra, size, budget, p)
    else:
        before = collateral.full_requirement(qty[i], kind[i], strike[i], s_t, mark_)
        others = acct[REQ] - before
        filled = collateral.full_fill(
            qty[i], direction, size, kind[i], strike[i], s_t, mark_, budget - others
        )
    return filled if filled >= DUST else 0.0


@njit(cache=True, inline="always")
def fee_for(filled, side, mark_, spot, trade_vega, acct, p):
    """(fee, its vega-utilisation part): base x mark + spot fee per contract, plus the vega fee
    when the trade grows |net vega|, at least min_fee per contract, never more than a seller's
    mark."""
    book_vega = acct[BOOK_VEGA]
    fee = filled * (p.base_fee * mark_ + p.spot_fee * spot)
    vega_fee = 0.0
    if abs(book_vega + trade_vega) > abs(book_vega):
        vega_fee = p.vega_fee * abs(book_vega + trade_vega) / acct[NAV] * abs(trade_vega)
    fee = max(fee + vega_fee, p.min_fee * filled)
    if side < 0:
        fee = min(fee, filled * mark_)
    return fee, vega_fee


@njit(cache=True, inline="always")
def trade(t, mk, ser, surf, impact, flow, book, st, out, p):
    """Step 4: fill the flow rows of this tick at its marks plus fees, under the collateral cap.

    Inventory impact from these fills moves marks from the next tick on.
    """
    ts, spot, iv, rate, _, surf_idx = mk
    expiry, strike, kind, expiry_id, strike_id = ser
    imp_e, imp_s = impact
    now, atm, r_t, snap = ts[t], iv[t], rate[t], surf_idx[t]
    f_tick, f_series, f_side, f_size = flow
    qty, val, val_tick, _, _, scen_pnl, extra = book
    acct, ist, pnl = st
    _, trades, _, series_out = out
    dynamic = p.collateral == DYNAMIC
    s_t = spot[t]
    ist[TRADED] = 0
    while ist[FLOW_AT] < f_tick.shape[0] and f_tick[ist[FLOW_AT]] == t:
        fi = ist[FLOW_AT]
        ist[FLOW_AT] += 1
        i = f_series[fi]
        side = f_side[fi]
        size = f_size[fi]
        if val_tick[i] != t:
            value_series(
                val,
                i,
                now,
                s_t,
                atm,
                r_t,
                snap,
                expiry,
                strike,
                kind,
                expiry_id,
                strike_id,
                surf,
                imp_e,
                imp_s,
                p,
            )
            val_tick[i] = t
        mark_ = val[i, PRICE]
        direction = -side  # the pool takes the other side
        rec = trades[fi]
        rec.ts = ts[t]
        rec.series = i
        rec.side = side
        rec.size = size
        rec.spot = s_t
        rec.iv = val[i, SIGMA]
        rec.mark = mark_
        rec.vega = val[i, VEGA]
        filled = 0.0
        if ist[INSOLVENT] == 1 or acct[NAV] <= 0.0:
            rec.reject_reason = REJECT_INSOLVENT
        elif ist[HALTED] == 1:
            rec.reject_reason = REJECT_HALTED
        else:
            filled = fill_size(i, t, mk, ser, book, acct, direction, size, p)
            rec.reject_reason = REJECT_NONE if filled >= size else REJECT_UTILISATION
        rec.filled = filled
        if filled <= 0.0:
            continue
        dq = direction * filled
        fee, vega_fee = fee_for(filled, side, mark_, s_t, dq * val[i, VEGA], acct, p)
        premium = side * filled * mark_ + fee
        acct[CASH] += premium
        if dynamic:
            for s in range(N_SCENARIOS):
                scen_pnl[s] += filled * extra[s]
        else:
            acct[REQ] -= collateral.full_requirement(qty[i], kind[i], strike[i], s_t, mark_)
        change_position(i, dq, mark_, book, acct, ist)
        if dynamic:
            acct[REQ] = collateral.dynamic_requirement(scen_pnl, extra, 0.0, p)
        else:
            acct[REQ] += collateral.full_requirement(qty[i], kind[i], strike[i], s_t, mark_)
        acct[NAV] += fee
        pnl[P_FEES] += fee
        impact[0][expiry_id[i]] += side * filled / p.standard_size * p.iv_impact
        impact[1][strike_id[i]] += side * filled / p.standard_size * p.skew_impact
        series_out[i].volume += filled
        series_out[i].fees += fee
        rec.fee = fee
        rec.fee_vega = vega_fee
        rec.premium = premium
        ist[TRADED] = 1


@njit(cache=True)
def fill_hedge(t, mk, order, reason, book, st, hedges, p):
    """Trade `order` underlying through the slippage model at spot[t] and record it."""
    ts, spot, iv, _, _, _ = mk
    scen_pnl, extra = book[5], book[6]
    acct, ist, pnl = st
    if ist[N_HEDGES] >= hedges.shape[0]:
        raise IndexError("hedge records full: more hedge fills than the capacity planned")
    s_t = spot[t]
    filled, price, slip, gas, mev = slippage.execute(order, s_t, iv[t], p)
    cost = slip + gas + mev
    acct[CASH] -= cost + (0.0 if p.instrument == PERP else filled * s_t)
    acct[UNITS] += filled
    acct[NAV] -= cost
    pnl[P_HEDGE_COST] -= cost
    if p.collateral == DYNAMIC:
        collateral.hedge_scenario_pnl(scen_pnl, filled, s_t, p)
        acct[REQ] = collateral.dynamic_requirement(scen_pnl, extra, 0.0, p)
    h = hedges[ist[N_HEDGES]]
    h.ts = ts[t]
    h.qty = filled
    h.spot = s_t
    h.exec_price = price
    h.slippage_cost = slip
    h.gas_cost = gas
    h.mev_cost = mev
    h.reason = reason
    ist[N_HEDGES] += 1


@njit(cache=True, inline="always")
def hedge_step(t, mk, pending, pending_reason, book, st, hedges, p):
    """Step 5: fill what was decided `latency` ticks ago at this tick's price, then decide."""
    ts, spot, iv, _, _, _ = mk
    acct, ist, _ = st
    s_t = spot[t]
    slots = pending.shape[0]
    slot = t % slots
    order = pending[slot]
    reason = pending_reason[slot]
    pending[slot] = 0.0
    bucket = ts[t] // p.interval_ns
    in_flight = pending.sum()
    units = acct[UNITS]
    net = acct[BOOK_DELTA] + units + order + in_flight
    traded = ist[TRADED] == 1
    new_bucket = bucket != ist[LAST_BUCKET]
    decided = hedge.decide(net, s_t, iv[t], acct[NAV], acct[BOOK_GAMMA], traded, new_bucket, p)
    ist[LAST_BUCKET] = bucket
    if decided != 0.0:
        decided = hedge.capped(decided, units + order + in_flight, s_t, p)
    if p.latency == 0:
        order = decided
        reason = p.policy
    elif decided != 0.0:
        later = (t + p.latency) % slots
        pending[later] += decided
        pending_reason[later] = p.policy
    if order != 0.0:
        fill_hedge(t, mk, order, reason, book, st, hedges, p)


@njit(cache=True)
def freed_per_unit(q, kind, strike, spot, mark_):
    """Full collateral a position frees per contract closed: spot/strike for a short, its mark
    for a long."""
    if q < 0.0:
        return spot if kind > 0 else strike
    return mark_


@njit(cache=True)
def fits(requirement, scen_pnl, extra, x, freed, cost, nav, dynamic, p):
    """Does closing x units (freeing `freed` each in full mode, paying `cost` each) bring the
    requirement within max_utilisation x NAV?"""
    if dynamic:
        after = collateral.dynamic_requirement(scen_pnl, extra, x, p)
    else:
        after = requirement - x * freed
    return after <= p.max_utilisation * (nav - x * cost)


@njit(cache=True)
def least_that_fits(requirement, scen_pnl, extra, size, freed, cost, nav, dynamic, p):
    """The least x in [0, size] that fits, or size when even all of it does not."""
    if not fits(requirement, scen_pnl, extra, size, freed, cost, nav, dynamic, p):
        return size
    lo, hi = 0.0, size
    for _ in range(collateral.BISECTIONS):
        mid = 0.5 * (lo + hi)
        if fits(requirement, scen_pnl, extra, mid, freed, cost, nav, dynamic, p):
            hi = mid
        else:
            lo = mid
    return hi


@njit(cache=True)
def riskiest(t, mk, ser, book, acct, ist, p):
    """(series, its risk) of the position that weighs most: the largest collateral user (full)
    or the largest loss in the scenario that sets the requirement (dynamic). -1 if none; the
    hedge's own risk is returned alongside (dynamic only)."""
    s_t = mk[1][t]
    strike, kind = ser[1], ser[2]
    qty, val, _, live, scen, scen_pnl, _ = book
    dynamic = p.collateral == DYNAMIC
    worst = 0
    for s in range(N_SCENARIOS):
        if scen_pnl[s] < scen_pnl[worst]:
            worst = s
    pick = -1
    pick_risk = 0.0
    for j in range(ist[N_LIVE]):
        i = live[j]
        if dynamic:
            risk = -qty[i] * (scen[i, worst] - val[i, PRICE])
        else:
            risk = abs(qty[i]) * freed_per_unit(qty[i], kind[i], strike[i], s_t, val[i, PRICE])
        if risk > pick_risk:
            pick_risk = risk
            pick = i
    hedge_risk = -acct[UNITS] * s_t * collateral.spot_shock(worst, p) if dynamic else 0.0
    return pick, pick_risk, hedge_risk


@njit(cache=True)
def shrink(t, mk, ser, book, st, out, reserve, p):
    """Close positions, riskiest first, until the requirement fits max_utilisation x (NAV -
    reserve). Options close at their mark plus liquidation_penalty (buy back shorts, sell
    longs); in dynamic mode the hedge is a candidate too and unwinds through the slippage model
    (a hedge with reason 'liquidation')."""
    spot = mk[1]
    strike, kind = ser[1], ser[2]
    qty, val, _, _, scen, scen_pnl, extra = book
    acct, ist, pnl = st
    hedges, series_out = out[2], out[3]
    s_t = spot[t]
    dynamic = p.collateral == DYNAMIC
    hedge_unwound = False  # at most once per call: hedges has one liquidation row per call
    for _ in range(ist[N_LIVE] + 2):
        nav = acct[NAV] - reserve
        if nav <= 0.0 or acct[REQ] <= p.max_utilisation * nav:
            return
        pick, pick_risk, hedge_risk = riskiest(t, mk, ser, book, acct, ist, p)
        if hedge_risk > pick_risk and not hedge_unwound:
            hedge_unwound = True
            units = acct[UNITS]
            for s in range(N_SCENARIOS):
                extra[s] = -math.copysign(1.0, units) * s_t * collateral.spot_shock(s, p)
            x = least_that_fits(acct[REQ], scen_pnl, extra, abs(units), 0.0, 0.0, nav, True, p)
            extra[:] = 0.0
            fill_hedge(t, mk, -math.copysign(x, units), LIQUIDATION, book, st, hedges, p)
            continue
        if pick < 0:
            return
        mark_ = val[pick, PRICE]
        direction = 1.0 if qty[pick] < 0.0 else -1.0  # buy back a short, sell a long
        freed = freed_per_unit(qty[pick], kind[pick], strike[pick], s_t, mark_)
        if dynamic:
            for s in range(N_SCENARIOS):
                extra[s] = direction * (scen[pick, s] - mark_)
        cost = mark_ * p.liquidation_penalty
        x = least_that_fits(
            acct[REQ], scen_pnl, extra, abs(qty[pick]), freed, cost, nav, dynamic, p
        )
        penalty = x * cost
        acct[CASH] -= direction * x * mark_ + penalty
        change_position(pick, direction * x, mark_, book, acct, ist)
        if dynamic:
            for s in range(N_SCENARIOS):
                scen_pnl[s] += x * extra[s]
            extra[:] = 0.0
            acct[REQ] = collateral.dynamic_requirement(scen_pnl, extra, 0.0, p)
        else:
            acct[REQ] -= x * freed
        acct[NAV] -= penalty
        pnl[P_LIQUIDATION] -= penalty
        series_out[pick].pnl_liquidation -= penalty
        series_out[pick].volume += x


@njit(cache=True, inline="always")
def lp_step(t, mk, ser, lp, queue, book, st, out, p):
    """LP deposits and withdrawals at NAV per share; withdrawals wait withdrawal_delay, pay the
    fee to the LPs who stay, and force the book to shrink when collateral would not fit."""
    ts = mk[0]
    lp_tick, lp_amount = lp
    q_due, q_shares = queue
    acct, ist, _ = st
    nps = acct[NAV] / acct[SHARES] if acct[SHARES] > 0.0 else 0.0
    acct[LP_FLOW] = 0.0
    n_rows = lp_tick.shape[0]
    while ist[LP_AT] < n_rows and lp_tick[ist[LP_AT]] < t:  # rows before the window
        ist[LP_AT] += 1
    while ist[LP_AT] < n_rows and lp_tick[ist[LP_AT]] == t:
        r = ist[LP_AT]
        ist[LP_AT] += 1
        if nps <= 0.0:
            continue
        if lp_amount[r] > 0.0:
            acct[SHARES] += lp_amount[r] / nps
            acct[CASH] += lp_amount[r]
            acct[NAV] += lp_amount[r]
            acct[LP_FLOW] += lp_amount[r]
        else:
            q_due[ist[WQ_TAIL]] = ts[t] + p.withdrawal_delay_ns
            q_shares[ist[WQ_TAIL]] = -lp_amount[r] / nps
            ist[WQ_TAIL] += 1
    # The run rule: each further run_drawdown of drawdown in NAV per share sends run_fraction out.
    if p.run_drawdown > 0.0 and nps > 0.0 and acct[SHARES] > 0.0:
        if nps > acct[PEAK_NPS]:
            acct[PEAK_NPS] = nps
            acct[RUN_LEVEL] = p.run_drawdown
        if 1.0 - nps / acct[PEAK_NPS] >= acct[RUN_LEVEL]:
            q_due[ist[WQ_TAIL]] = ts[t] + p.withdrawal_delay_ns
            q_shares[ist[WQ_TAIL]] = p.run_fraction * acct[SHARES]
            ist[WQ_TAIL] += 1
            acct[RUN_LEVEL] += p.run_drawdown
    while ist[WQ_HEAD] < ist[WQ_TAIL] and q_due[ist[WQ_HEAD]] <= ts[t]:
        shares = min(q_shares[ist[WQ_HEAD]], acct[SHARES])
        ist[WQ_HEAD] += 1
        nps = acct[NAV] / acct[SHARES] if acct[SHARES] > 0.0 else 0.0
        payout = shares * max(nps, 0.0) * (1.0 - p.withdrawal_fee)
        if payout <= 0.0:
            continue
        shrink(t, mk, ser, book, st, out, payout, p)
        payout = min(payout, max(acct[NAV], 0.0))
        acct[SHARES] -= shares
        acct[CASH] -= payout
        acct[NAV] -= payout
        acct[LP_FLOW] -= payout


@njit(cache=True, inline="always")
def record(t, mk, book, st, steps):
    ts, spot, iv, _, _, _ = mk
    qty, val, _, live, _, _, _ = book
    acct, ist, pnl = st
    theta = 0.0
    for j in range(ist[N_LIVE]):
        theta += qty[live[j]] * val[live[j], THETA]
    nav = acct[NAV]
    rec = steps[t]
    rec.ts = ts[t]
    rec.spot = spot[t]
    rec.iv = iv[t]
    rec.nav = nav
    rec.cash = acct[CASH]
    rec.hedge_units = acct[UNITS]
    rec.book_delta = acct[BOOK_DELTA]
    rec.net_delta = acct[BOOK_DELTA] + acct[UNITS]
    rec.book_gamma = acct[BOOK_GAMMA]
    rec.book_vega = acct[BOOK_VEGA]
    rec.book_theta = theta
    rec.collateral_required = acct[REQ]
    rec.utilisation = acct[REQ] / nav if nav > 0.0 else math.inf
    rec.pnl_delta = pnl[P_DELTA]
    rec.pnl_gamma = pnl[P_GAMMA]
    rec.pnl_vega = pnl[P_VEGA]
    rec.pnl_theta = pnl[P_THETA]
    rec.pnl_vanna = pnl[P_VANNA]
    rec.pnl_volga = pnl[P_VOLGA]
    rec.pnl_residual = pnl[P_RESIDUAL]
    rec.pnl_fees = pnl[P_FEES]
    rec.pnl_hedge_cost = pnl[P_HEDGE_COST]
    rec.pnl_funding = pnl[P_FUNDING]
    rec.pnl_interest = pnl[P_INTEREST]
    rec.pnl_liquidation = pnl[P_LIQUIDATION]
    rec.pnl_total = pnl.sum()
    rec.lp_flow = acct[LP_FLOW]
    rec.shares = acct[SHARES]
    rec.nav_per_share = nav / acct[SHARES] if acct[SHARES] > 0.0 else 0.0
    rec.n_live_series = ist[N_LIVE]
    rec.insolvent = ist[INSOLVENT]
    rec.halted = ist[HALTED]


@njit(cache=True)
def run_path(mk, ser, surf, flow, lp, p, out):
    """Run one path into out = (steps[n_ticks], trades[n_flow], hedges, series_out[n_series]);
    hedges has room for hedge_capacity(n_ticks, n_lp_rows) fills: per tick the policy's and a
    liquidation's, and one per LP withdrawal paid (each may force one hedge unwind). Returns the
    number of hedges written.

    mk = (ts, spot, iv, rate, funding, surface snapshot index per tick); ser = (expiry, strike,
    kind, expiry id, strike id) per series; surf = (tenors, log-moneyness, vols[snap, tenor, k]);
    flow = (tick, series, side, size) in time order; lp = (tick, amount) of LP flows.
    """
    ts, _, iv, _, _, _ = mk
    n_ticks = ts.shape[0]
    n_series = ser[0].shape[0]
    n_expiries = ser[3].max() + 1 if n_series else 0
    n_strikes = ser[4].max() + 1 if n_series else 0
    steps, _, hedges, series_out = out

    book = (
        np.zeros(n_series),  # qty
        np.zeros((n_series, 8)),  # valuation cache
        np.full(n_series, -1, np.int64),  # tick of each cache row
        np.empty(n_series, np.int64),  # live series
        np.zeros((n_series, N_SCENARIOS)),  # scenario prices (dynamic collateral)
        np.zeros(N_SCENARIOS),  # book + hedge PnL per scenario
        np.zeros(N_SCENARIOS),  # scratch: a trade's PnL per scenario
    )
    acct = np.zeros(N_ACCT)
    ist = np.zeros(N_IST, np.int64)
    pnl = np.zeros(N_PNL)
    st = (acct, ist, pnl)
    impact = (np.zeros(n_expiries), np.zeros(n_strikes))
    pending = np.zeros(p.latency + 1)
    pending_reason = np.zeros(p.latency + 1, np.int8)
    capacity = lp[0].shape[0] + n_ticks
    queue = (np.zeros(capacity, np.int64), np.zeros(capacity))
    log_iv_sum = np.zeros(n_ticks + 1)
    for t in range(n_ticks):
        log_iv_sum[t + 1] = log_iv_sum[t] + math.log(iv[t])

    acct[CASH] = p.initial_capital
    acct[NAV] = p.initial_capital
    acct[FREE_PREV] = p.initial_capital
    acct[SHARES] = p.initial_capital  # one share = one unit of quote currency at the start
    acct[PEAK_NPS] = 1.0
    acct[RUN_LEVEL] = p.run_drawdown
    ist[LAST_BUCKET] = -1
    ist[HALT_UNTIL] = np.iinfo(np.int64).min

    for t in range(n_ticks):
        pnl[:] = 0.0
        if t > 0:
            mark(t, mk, ser, surf, impact, book, st, series_out, p)
            settle(t, mk, ser, book, acct, ist)
            fund(t, mk, acct, pnl, p)
        book_state(t, mk, ser, book, acct, ist, p)
        circuit_breaker(t, mk, log_iv_sum, acct, ist, p)
        trade(t, mk, ser, surf, impact, flow, book, st, out, p)
        if p.policy != NO_POLICY:
            hedge_step(t, mk, pending, pending_reason, book, st, hedges, p)
        if p.collateral == DYNAMIC and acct[REQ] > p.liquidation_threshold * acct[NAV] > 0.0:
            shrink(t, mk, ser, book, st, out, 0.0, p)
        if acct[NAV] <= 0.0:
            ist[INSOLVENT] = 1
        lp_step(t, mk, ser, lp, queue, book, st, out, p)
        record(t, mk, book, st, steps)
        acct[FREE_PREV] = acct[NAV] - acct[REQ]
    return ist[N_HEDGES]


@njit(cache=True)
def hedge_capacity(n_ticks, n_lp_rows):
    """Hedge records to allocate: a policy fill and a liquidation per tick, plus the run rule's
    withdrawals (at most one per tick) and the LP file's, each of which may unwind the hedge."""
    return 3 * n_ticks + n_lp_rows


@njit(cache=True, parallel=True)
def run_paths(mk, tick_offsets, ser, surf, flow, flow_offsets, lp, p, out):
    """Every path in parallel; path k writes only its own slices, so the result equals serial.

    LP flows apply to every path (their ticks are per path: lp[0] has one row per path); path
    k's hedge rows start at hedge_capacity(tick_offsets[k], k x n_lp_rows).
    """
    ts, spot, iv, rate, funding, surf_idx = mk
    f_tick, f_series, f_side, f_size = flow
    lp_tick, lp_amount = lp
    steps, trades, hedges, series_out = out
    n_paths = tick_offsets.shape[0] - 1
    n_lp = lp_amount.shape[0]
    n_hedges = np.zeros(n_paths, np.int64)
    for k in prange(n_paths):
        a, b = tick_offsets[k], tick_offsets[k + 1]
        fa, fb = flow_offsets[k], flow_offsets[k + 1]
        n_hedges[k] = run_path(
            (ts[a:b], spot[a:b], iv[a:b], rate[a:b], funding[a:b], surf_idx[a:b]),
            ser,
            surf,
            (f_tick[fa:fb], f_series[fa:fb], f_side[fa:fb], f_size[fa:fb]),
            (lp_tick[k], lp_amount),
            p,
            (
                steps[a:b],
                trades[fa:fb],
                hedges[hedge_capacity(a, k * n_lp) : hedge_capacity(b, (k + 1) * n_lp)],
                series_out[k],
            ),
        )
    return n_hedges
