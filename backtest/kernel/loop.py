"""The event loop: one market path through the pool, tick by tick, in docs/design.md's order.

Mark -> settle -> fund -> trade -> hedge -> risk -> LP flows -> insolvency -> lending -> record.
This module only sequences the steps and allocates one path's state; each rule lives in its
own module. Every money movement lands in exactly one pnl_* component or in lp_flow, so
nav[t] - nav[t-1] == pnl_total[t] + lp_flow[t] holds to rounding.
"""

import math

import numpy as np
from numba import njit

from backtest.kernel import (
    attribution,
    book,
    carry,
    collateral,
    hedge,
    impact,
    instrument,
    lending,
    lp,
    vega,
    venue,
)
from backtest.kernel.record import record
from backtest.kernel.trade import circuit_breaker, trade
from backtest.kernel.types import (
    ACCOUNT_DTYPE,
    LIQUIDATION,
    N_SCENARIOS,
    POLICY,
    VEGA_POLICY,
    Book,
    Impact,
    PathState,
    PendingHedges,
    SharedTerms,
    WithdrawalQueue,
)

NO_POLICY = POLICY["none"]
NO_VEGA_POLICY = VEGA_POLICY["none"]


@njit(cache=True)
def new_book(ser):
    n_series = ser.strike.shape[0]
    log_strike = np.empty(n_series)
    first_at = np.full(ser.strike_id.max() + 1 if n_series else 0, -1, np.int64)
    sibling = np.full(n_series, -1, np.int64)
    for i in range(n_series):
        log_strike[i] = math.log(ser.strike[i])
        n = ser.strike_id[i]
        if first_at[n] >= 0:  # the other kind at this expiry and strike
            sibling[i], sibling[first_at[n]] = first_at[n], i
        first_at[n] = i
    return Book(
        np.zeros(n_series),
        np.zeros(n_series),
        np.zeros(n_series),
        np.zeros(n_series),
        np.zeros(n_series),
        np.zeros(n_series),
        np.zeros(n_series),
        np.zeros(n_series),
        np.zeros(n_series),
        np.full(n_series, -1, np.int64),
        np.empty(n_series, np.int64),
        np.zeros((n_series, N_SCENARIOS)),
        np.zeros(N_SCENARIOS),
        log_strike,
        sibling,
    )


# _nrt=False: the tick loop runs without numba's reference counting. Every step is inlined
# here and takes NamedTuples of arrays; numba increfs each array a step binds and, once branches
# and raises make the pass that prunes those pairs give up, does so per series-tick: atomic
# operations were 88 % of the kernel's time (perf). All allocation happens in run_path, which
# keeps every array alive while this runs; a step that allocated would fail to compile here.
@njit(cache=True, nogil=True, _nrt=False)
def ticks(
    mk,
    ser,
    surf,
    flow,
    listed,
    lp_rows,
    pool,
    pricing,
    hedging,
    slip,
    lp_params,
    fp,
    vh,
    lend,
    mev,
    out,
    state,
):
    bk, terms, imp, pending, queue = (
        state.book,
        state.terms,
        state.impact,
        state.pending,
        state.queue,
    )
    acct = state.account[0]
    for t in range(mk.ts.shape[0]):
        row = out.steps[t]
        if t > 0:
            instrument.mark_hedge(acct, row, mk.spot[t] - mk.spot[t - 1], hedging)
            impact.begin_tick(imp, mk.ts[t] - mk.ts[t - 1], pricing)
            attribution.mark_book(t, mk, ser, surf, imp, terms, bk, acct, row, out.series, pricing)
            book.settle(bk, acct, ser, mk.ts[t])
            carry.fund(t, mk, acct, row, pool, hedging)
            lending.accrue(t, mk, acct, row, lend)
            venue.arbitrage(acct, mk.ts[t] - mk.ts[t - 1], slip)
        lending.open_tick(t, mk, acct, lend)
        book.revalue(bk, acct, ser, mk.spot[t], hedging)
        collateral.refresh(t, mk, ser, bk, acct, pool, hedging)
        circuit_breaker(t, mk, state.log_iv_sum, acct, pricing)
        trade(t, mk, ser, surf, imp, terms, flow, bk, acct, row, out, pool, pricing, hedging, fp)
        if vh.policy != NO_VEGA_POLICY:
            vega.hedge_vega(
                t,
                mk,
                ser,
                surf,
                imp,
                terms,
                listed,
                state.bucket_vega,
                bk,
                acct,
                row,
                out,
                pool,
                pricing,
                hedging,
                vh,
            )
        if hedging.policy != NO_POLICY:
            hedge.hedge_step(t, mk, pending, bk, acct, row, out.hedges, pool, hedging, slip, mev)
        net = acct.book_delta + acct.units
        collateral.liquidate(t, mk, ser, bk, acct, row, out, pool, hedging, slip, mev)
        hedge.restore_delta(
            t, mk, bk, acct, row, out.hedges, net, LIQUIDATION, pool, hedging, slip, mev
        )
        lp.lp_step(
            t, mk, ser, lp_rows, queue, bk, acct, row, out, pool, hedging, slip, mev, lp_params
        )
        if acct.nav < 0.0 or (acct.nav == 0.0 and acct.shares > 0.0):
            acct.insolvent = 1  # equity gone: bad debt, no more flow
        lending.rebalance(t, mk, acct, row, lend)
        record(t, mk, acct, row, pool, hedging)
        if vh.policy != NO_VEGA_POLICY:
            row.listed_vega = vega.held_vega(bk, acct, listed.first)
        acct.cash_prev = acct.cash
        acct.free_prev = acct.cash - acct.locked_cash


@njit(cache=True)
def new_terms(n_expiries, n_strikes):
    return SharedTerms(
        np.full(n_expiries, -1, np.int64),
        np.zeros(n_expiries),
        np.zeros(n_expiries),
        np.zeros(n_expiries),
        np.zeros(n_expiries),
        np.full(n_strikes, -1, np.int64),
        np.zeros(n_strikes),
        np.zeros(n_strikes),
        np.zeros(n_strikes),
        np.zeros(n_strikes),
        np.zeros(n_strikes),
        np.zeros(n_strikes),
        np.zeros(n_strikes),
        np.zeros(n_strikes),
        np.zeros(n_strikes),
        np.zeros(n_strikes),
    )


@njit(cache=True, nogil=True)
def new_state(mk, ser, listed, lp_rows, pool, hedging, lp_params):
    """One path's state at its first tick: an empty book and the pool's initial capital."""
    n_ticks = mk.ts.shape[0]
    n_series = ser.expiry.shape[0]
    n_expiries = ser.expiry_id.max() + 1 if n_series else 0
    n_strikes = ser.strike_id.max() + 1 if n_series else 0
    terms = new_terms(n_expiries, n_strikes)
    imp = Impact(
        np.zeros(n_expiries), np.zeros(n_strikes), np.zeros(n_expiries), np.zeros(n_strikes)
    )
    slots = hedging.latency + 1 + (mk.delay.max() if mk.delay.shape[0] > 0 else 0)
    pending = PendingHedges(np.zeros(slots), np.zeros(slots, np.int8))
    capacity = lp_rows.tick.shape[0] + 2 * n_ticks  # a run-rule and a yield request a tick
    queue = WithdrawalQueue(
        np.zeros(capacity, np.int64), np.zeros(capacity), np.zeros(capacity, np.int8)
    )
    log_iv_sum = np.zeros(n_ticks + 1)
    for t in range(n_ticks):
        log_iv_sum[t + 1] = log_iv_sum[t] + math.log(mk.iv[t])

    account = np.zeros(1, ACCOUNT_DTYPE)
    acct = account[0]  # a view: it does not keep `account` alive, the state below does
    acct.cash = pool.initial_capital
    acct.cash_prev = pool.initial_capital
    acct.nav = pool.initial_capital
    acct.free_prev = pool.initial_capital
    acct.shares = pool.initial_capital  # one share = one unit of quote currency at the start
    acct.peak_nps = 1.0
    acct.run_level = lp_params.run_drawdown
    acct.last_bucket = -1
    acct.halt_until = np.iinfo(np.int64).min
    acct.yield_day = np.iinfo(np.int64).min
    most_listed = 0  # listed expiries a tick may hedge with, at most
    for t in range(n_ticks):
        most_listed = max(most_listed, listed.offsets[t + 1] - listed.offsets[t])
    bucket_vega = np.zeros(most_listed)
    return PathState(new_book(ser), terms, imp, pending, queue, account, log_iv_sum, bucket_vega)
