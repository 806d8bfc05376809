"""The event loop: one market path through the pool, tick by tick, in DESIGN.md's order.

Mark -> settle -> fund -> trade -> hedge -> risk -> record. Every money movement lands in exactly
one pnl_* component, so nav[t] - nav[t-1] == pnl_total[t] + lp_flow[t] holds to rounding; the
tests recompute NAV from the book and check it.
"""

import math

import numpy as np
from numba import njit, prange

from backtest.kernel import collateral, hedge, slippage
from backtest.kernel.bs import bs_greeks
from backtest.kernel.types import (
    COLLATERAL,
    INSTRUMENT,
    N_SCENARIOS,
    POLICY,
    REJECT_INSOLVENT,
    REJECT_NONE,
    REJECT_UTILISATION,
)

NS_PER_YEAR = 365.0 * 86_400.0 * 1e9
MIN_VOL = 0.01  # floor of the smile, so a steep skew never prices at zero vol
DUST = 1e-9  # positions smaller than this (contracts) are closed out
DYNAMIC = COLLATERAL["dynamic"]
PERP = INSTRUMENT["perp"]
NO_POLICY = POLICY["none"]

# Columns of the per-series valuation cache.
PRICE, DELTA, GAMMA, VEGA, THETA, VANNA, VOLGA, SIGMA = range(8)
# Indices of the per-tick PnL accumulator (same order as types.PNL_COMPONENTS).
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


@njit(cache=True)
def series_vol(atm_vol, spot, strike, tau, rate, p):
    """Smile around the ATM vol in log-moneyness ln(K/F)."""
    k = math.log(strike / (spot * math.exp(rate * max(tau, 0.0))))
    return max(atm_vol + p.skew_slope * k + p.smile_curvature * k * k, MIN_VOL)


@njit(cache=True)
def value_series(val, i, kind, strike, expiry_ns, ts_ns, spot, atm_vol, rate, p):
    """Revalue series i at this tick into val[i]; returns its new vol."""
    tau = (expiry_ns - ts_ns) / NS_PER_YEAR
    vol = series_vol(atm_vol, spot, strike, tau, rate, p)
    price, delta, gamma, vega, theta, vanna, volga = bs_greeks(kind, spot, strike, tau, vol, rate)
    val[i, PRICE] = price
    val[i, DELTA] = delta
    val[i, GAMMA] = gamma
    val[i, VEGA] = vega
    val[i, THETA] = theta
    val[i, VANNA] = vanna
    val[i, VOLGA] = volga
    val[i, SIGMA] = vol
    return vol


@njit(cache=True)
def run_path(
    ts,
    spot,
    iv,
    rate,
    funding,
    flow_tick,
    flow_series,
    flow_side,
    flow_size,
    ser_expiry,
    ser_strike,
    ser_kind,
    p,
    steps,
    trades,
    hedges,
    series_out,
):
    """Run one path; fills steps[n_ticks], trades[n_flow], series_out[n_series] and the first
    n_hedges rows of hedges (capacity n_ticks: at most one fill per tick). Returns n_hedges."""
    n_ticks = ts.shape[0]
    n_series = ser_expiry.shape[0]
    n_flow = flow_tick.shape[0]
    dynamic = p.collateral == DYNAMIC
    perp = p.instrument == PERP

    qty = np.zeros(n_series)
    val = np.zeros((n_series, 8))
    val_tick = np.full(n_series, -1, np.int64)
    live = np.empty(n_series, np.int64)
    n_live = 0
    scen = np.zeros((n_series, N_SCENARIOS))
    scen_pnl = np.zeros(N_SCENARIOS)
    extra = np.zeros(N_SCENARIOS)
    pnl = np.zeros(N_PNL)
    slots = p.latency + 1
    pending = np.zeros(slots)
    pending_reason = np.zeros(slots, np.int8)

    cash = p.initial_capital
    units = 0.0  # hedge position in underlying
    nav = cash
    free_prev = cash
    insolvent = False
    n_hedges = 0
    fi = 0
    last_bucket = -1

    for t in range(n_ticks):
        s_t = spot[t]
        r_t = rate[t]
        now = ts[t]
        pnl[:] = 0.0

        # 1. Mark: attribute the move since t-1 on the book held since t-1.
        if t > 0:
            dt = (now - ts[t - 1]) / NS_PER_YEAR
            ds = s_t - spot[t - 1]
            pnl[P_DELTA] += units * ds
            if perp:
                cash += units * ds  # variation margin settles the perp's move in cash
            for j in range(n_live):
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
                vol = value_series(
                    val, i, ser_kind[i], ser_strike[i], ser_expiry[i], now, s_t, iv[t], r_t, p
                )
                val_tick[i] = t
                dv = vol - old_vol
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
                out = series_out[i]
                out.pnl_delta += c_delta
                out.pnl_gamma += c_gamma
                out.pnl_vega += c_vega
                out.pnl_theta += c_theta
                out.pnl_vanna += c_vanna
                out.pnl_volga += c_volga
                out.pnl_residual += c_res

            # 2. Settle: expired series pay intrinsic at spot[t] (already their mark).
            j = n_live - 1
            while j >= 0:
                i = live[j]
                if ser_expiry[i] <= now:
                    cash += qty[i] * val[i, PRICE]
                    qty[i] = 0.0
                    n_live -= 1
                    live[j] = live[n_live]
                j -= 1

            # 3. Fund: idle yield on free capital, perp funding, over (t-1, t].
            interest = p.idle_yield * max(free_prev, 0.0) * dt
            fund = -units * spot[t - 1] * funding[t - 1] * dt if perp else 0.0
            cash += interest + fund
            pnl[P_INTEREST] += interest
            pnl[P_FUNDING] += fund

        # Book state at t before trading.
        book_value = 0.0
        book_delta = 0.0
        book_gamma = 0.0
        book_vega = 0.0
        requirement = 0.0
        if dynamic:
            scen_pnl[:] = 0.0
            collateral.hedge_scenario_pnl(scen_pnl, units, s_t, p)
        for j in range(n_live):
            i = live[j]
            q = qty[i]
            book_value += q * val[i, PRICE]
            book_delta += q * val[i, DELTA]
            book_gamma += q * val[i, GAMMA]
            book_vega += q * val[i, VEGA]
            if dynamic:
                tau = (ser_expiry[i] - now) / NS_PER_YEAR
                collateral.scenario_prices(
                    scen[i], ser_kind[i], s_t, ser_strike[i], tau, val[i, SIGMA], r_t, p
                )
                for s in range(N_SCENARIOS):
                    scen_pnl[s] += q * (scen[i, s] - val[i, PRICE])
            else:
                requirement += collateral.full_requirement(
                    q, ser_kind[i], ser_strike[i], s_t, val[i, PRICE]
                )
        nav = cash + book_value + (0.0 if perp else units * s_t)
        if dynamic:
            requirement = collateral.dynamic_requirement(scen_pnl, extra, 0.0, p)

        # 4. Trade: flow rows in [ts[t], ts[t+1]) at this tick's market.
        traded = False
        while fi < n_flow and flow_tick[fi] == t:
            i = flow_series[fi]
            side = flow_side[fi]
            size = flow_size[fi]
            if val_tick[i] != t:
                value_series(
                    val, i, ser_kind[i], ser_strike[i], ser_expiry[i], now, s_t, iv[t], r_t, p
                )
                val_tick[i] = t
            mark = val[i, PRICE]
            direction = -side  # the pool takes the other side
            rec = trades[fi]
            rec.ts = now
            rec.series = i
            rec.side = side
            rec.size = size
            rec.spot = s_t
            rec.iv = val[i, SIGMA]
            rec.mark = mark
            filled = 0.0
            if insolvent or nav <= 0.0:
                rec.reject_reason = REJECT_INSOLVENT
            else:
                budget = max(p.max_utilisation * nav, requirement)
                if dynamic:
                    tau = (ser_expiry[i] - now) / NS_PER_YEAR
                    collateral.scenario_prices(
                        scen[i], ser_kind[i], s_t, ser_strike[i], tau, val[i, SIGMA], r_t, p
                    )
                    for s in range(N_SCENARIOS):
                        extra[s] = direction * (scen[i, s] - mark)
                    filled = collateral.dynamic_fill(scen_pnl, extra, size, budget, p)
                else:
                    before = collateral.full_requirement(
                        qty[i], ser_kind[i], ser_strike[i], s_t, mark
                    )
                    filled = collateral.full_fill(
                        qty[i],
                        direction,
                        size,
                        ser_kind[i],
                        ser_strike[i],
                        s_t,
                        mark,
                        budget - (requirement - before),
                    )
                rec.reject_reason = REJECT_NONE if filled >= size else REJECT_UTILISATION
            rec.filled = filled
            fee = 0.0
            premium = 0.0
            if filled > 0.0:
                dq = direction * filled
                trade_vega = dq * val[i, VEGA]
                fee = filled * (p.base_fee * mark + p.spot_fee * s_t)
                if abs(book_vega + trade_vega) > abs(book_vega):
                    fee += p.vega_fee * abs(book_vega + trade_vega) / nav * abs(trade_vega)
                fee = max(fee, p.min_fee * filled)
                if side < 0:
                    fee = min(fee, filled * mark)  # a seller never pays to sell
                premium = side * filled * mark + fee
                cash += premium
                was_open = qty[i] != 0.0
                if dynamic:
                    for s in range(N_SCENARIOS):
                        scen_pnl[s] += filled * extra[s]
                else:
                    requirement -= collateral.full_requirement(
                        qty[i], ser_kind[i], ser_strike[i], s_t, mark
                    )
                qty[i] += dq
                if abs(qty[i]) < DUST:
                    # Closing dust at its mark moves value into cash: NAV is unchanged.
                    cash += qty[i] * mark
                    qty[i] = 0.0
                if not dynamic:
                    requirement += collateral.full_requirement(
                        qty[i], ser_kind[i], ser_strike[i], s_t, mark
                    )
                if not was_open and qty[i] != 0.0:
                    live[n_live] = i
                    n_live += 1
                elif was_open and qty[i] == 0.0:
                    for j in range(n_live):
                        if live[j] == i:
                            n_live -= 1
                            live[j] = live[n_live]
                            break
                book_delta += dq * val[i, DELTA]
                book_gamma += dq * val[i, GAMMA]
                book_vega += trade_vega
                pnl[P_FEES] += fee
                nav += fee
                series_out[i].volume += filled
                series_out[i].fees += fee
                traded = True
            rec.fee = fee
            rec.premium = premium
            fi += 1
        if dynamic:
            requirement = collateral.dynamic_requirement(scen_pnl, extra, 0.0, p)

        # 5. Hedge: fill what was decided `latency` ticks ago, then decide.
        if p.policy != NO_POLICY:
            slot = t % slots
            order = pending[slot]
            reason = pending_reason[slot]
            pending[slot] = 0.0
            bucket = now // p.interval_ns
            in_flight = 0.0
            for k in range(slots):
                in_flight += pending[k]
            decided = hedge.decide(
                book_delta + units + order + in_flight,
                s_t,
                iv[t],
                nav,
                book_gamma,
                traded,
                bucket != last_bucket,
                p,
            )
            last_bucket = bucket
            if decided != 0.0:
                decided = hedge.capped(decided, units + order + in_flight, s_t, p)
            if p.latency == 0:
                order = decided
                reason = p.policy
            elif decided != 0.0:
                pending[(t + p.latency) % slots] += decided
                pending_reason[(t + p.latency) % slots] = p.policy
            if order != 0.0:
                filled, price, slip, gas, mev = slippage.execute(order, s_t, iv[t], p)
                cost = slip + gas + mev
                cash -= cost + (0.0 if perp else filled * s_t)
                units += filled
                pnl[P_HEDGE_COST] -= cost
                nav -= cost
                if dynamic:
                    collateral.hedge_scenario_pnl(scen_pnl, filled, s_t, p)
                    requirement = collateral.dynamic_requirement(scen_pnl, extra, 0.0, p)
                h = hedges[n_hedges]
                h.ts = now
                h.qty = filled
                h.spot = s_t
                h.exec_price = price
                h.slippage_cost = slip
                h.gas_cost = gas
                h.mev_cost = mev
                h.reason = reason
                n_hedges += 1

        # 6. Risk: dynamic-mode liquidation, then insolvency.
        if dynamic and nav > 0.0 and requirement > p.liquidation_threshold * nav:
            requirement, nav, cash = liquidate(
                qty,
                val,
                scen,
                scen_pnl,
                extra,
                live,
                n_live,
                requirement,
                nav,
                cash,
                pnl,
                series_out,
                p,
            )
            for j in range(n_live - 1, -1, -1):
                i = live[j]
                if qty[i] == 0.0:
                    n_live -= 1
                    live[j] = live[n_live]
            book_delta = 0.0
            book_gamma = 0.0
            book_vega = 0.0
            for j in range(n_live):
                i = live[j]
                book_delta += qty[i] * val[i, DELTA]
                book_gamma += qty[i] * val[i, GAMMA]
                book_vega += qty[i] * val[i, VEGA]
        if nav <= 0.0:
            insolvent = True

        # 7. Record.
        book_theta = 0.0
        for j in range(n_live):
            book_theta += qty[live[j]] * val[live[j], THETA]
        st = steps[t]
        st.ts = now
        st.spot = s_t
        st.iv = iv[t]
        st.nav = nav
        st.cash = cash
        st.hedge_units = units
        st.book_delta = book_delta
        st.net_delta = book_delta + units
        st.book_gamma = book_gamma
        st.book_vega = book_vega
        st.book_theta = book_theta
        st.collateral_required = requirement
        st.utilisation = requirement / nav if nav > 0.0 else math.inf
        st.pnl_delta = pnl[P_DELTA]
        st.pnl_gamma = pnl[P_GAMMA]
        st.pnl_vega = pnl[P_VEGA]
        st.pnl_theta = pnl[P_THETA]
        st.pnl_vanna = pnl[P_VANNA]
        st.pnl_volga = pnl[P_VOLGA]
        st.pnl_residual = pnl[P_RESIDUAL]
        st.pnl_fees = pnl[P_FEES]
        st.pnl_hedge_cost = pnl[P_HEDGE_COST]
        st.pnl_funding = pnl[P_FUNDING]
        st.pnl_interest = pnl[P_INTEREST]
        st.pnl_liquidation = pnl[P_LIQUIDATION]
        total = 0.0
        for k in range(N_PNL):
            total += pnl[k]
        st.pnl_total = total
        st.lp_flow = 0.0
        st.n_live_series = n_live
        st.insolvent = 1 if insolvent else 0
        free_prev = nav - requirement
    return n_hedges


@njit(cache=True)
def liquidate(
    qty, val, scen, scen_pnl, extra, live, n_live, requirement, nav, cash, pnl, series_out, p
):
    """Buy back shorts at mark x (1 + penalty), riskiest first, until utilisation is back at
    max_utilisation. Riskiest = largest loss in the scenario that sets the requirement."""
    target = p.max_utilisation
    while nav > 0.0 and requirement > target * nav:
        worst = 0
        for s in range(N_SCENARIOS):
            if scen_pnl[s] < scen_pnl[worst]:
                worst = s
        pick = -1
        pick_loss = 0.0
        for j in range(n_live):
            i = live[j]
            if qty[i] < 0.0:
                loss = qty[i] * (scen[i, worst] - val[i, PRICE])
                if loss < pick_loss:
                    pick_loss = loss
                    pick = i
        if pick < 0:
            break
        mark = val[pick, PRICE]
        short = -qty[pick]
        for s in range(N_SCENARIOS):
            extra[s] = scen[pick, s] - mark
        # The penalty paid also lowers NAV, so the fit is checked on both; buy back the least
        # that fits, or all of this series and move on to the next riskiest.
        x = short
        if _liquidation_fits(scen_pnl, extra, short, nav, mark, target, p):
            lo = 0.0
            for _ in range(collateral.BISECTIONS):
                mid = 0.5 * (lo + x)
                if _liquidation_fits(scen_pnl, extra, mid, nav, mark, target, p):
                    x = mid
                else:
                    lo = mid
        penalty = x * mark * p.liquidation_penalty
        cash -= x * mark + penalty
        qty[pick] += x
        if qty[pick] > -DUST:
            cash += qty[pick] * mark
            qty[pick] = 0.0
        for s in range(N_SCENARIOS):
            scen_pnl[s] += x * extra[s]
        pnl[P_LIQUIDATION] -= penalty
        series_out[pick].pnl_liquidation -= penalty
        series_out[pick].volume += x
        nav -= penalty
        for s in range(N_SCENARIOS):
            extra[s] = 0.0
        requirement = collateral.dynamic_requirement(scen_pnl, extra, 0.0, p)
    return requirement, nav, cash


@njit(cache=True)
def _liquidation_fits(scen_pnl, extra, x, nav, mark, target, p):
    req = collateral.dynamic_requirement(scen_pnl, extra, x, p)
    return req <= target * (nav - x * mark * p.liquidation_penalty)


@njit(cache=True, parallel=True)
def run_paths(
    ts,
    spot,
    iv,
    rate,
    funding,
    tick_offsets,
    flow_tick,
    flow_series,
    flow_side,
    flow_size,
    flow_offsets,
    ser_expiry,
    ser_strike,
    ser_kind,
    p,
    steps,
    trades,
    hedges,
    series_out,
):
    """Every path in parallel; path k writes only its own slices, so the result equals serial."""
    n_paths = tick_offsets.shape[0] - 1
    n_hedges = np.zeros(n_paths, np.int64)
    for k in prange(n_paths):
        a, b = tick_offsets[k], tick_offsets[k + 1]
        fa, fb = flow_offsets[k], flow_offsets[k + 1]
        n_hedges[k] = run_path(
            ts[a:b],
            spot[a:b],
            iv[a:b],
            rate[a:b],
            funding[a:b],
            flow_tick[fa:fb],
            flow_series[fa:fb],
            flow_side[fa:fb],
            flow_size[fa:fb],
            ser_expiry,
            ser_strike,
            ser_kind,
            p,
            steps[a:b],
            trades[fa:fb],
            hedges[a:b],
            series_out[k],
        )
    return n_hedges
