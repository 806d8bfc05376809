"""The event loop: one market path through the pool, tick by tick, in docs/design.md's order.

Mark -> settle -> fund -> trade -> hedge -> risk -> LP flows -> insolvency -> record. This
module only sequences the steps and allocates one path's state; each rule lives in its own
module. Every money movement lands in exactly one pnl_* component or in lp_flow, so
nav[t] - nav[t-1] == pnl_total[t] + lp_flow[t] holds to rounding.
"""

import math

import numpy as np
from numba import njit, prange

from backtest.kernel import attribution, book, carry, collateral, hedge, impact, instrument, lp
from backtest.kernel.record import record
from backtest.kernel.trade import circuit_breaker, trade
from backtest.kernel.types import (
    ACCOUNT_DTYPE,
    N_SCENARIOS,
    POLICY,
    Book,
    FlowRows,
    Impact,
    LpRows,
    MarketPath,
    PendingHedges,
    Records,
    WithdrawalQueue,
)

NO_POLICY = POLICY["none"]


@njit(cache=True)
def new_book(n_series):
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
        np.zeros(N_SCENARIOS),
    )


@njit(cache=True)
def run_path(mk, ser, surf, flow, lp_rows, pool, pricing, hedging, slip, lp_params, out):
    """Run one path into its records; returns how many hedge, close and LP records it made
    (which may exceed the room in `out`: the caller then reruns with more)."""
    n_ticks = mk.ts.shape[0]
    n_series = ser.expiry.shape[0]
    n_expiries = ser.expiry_id.max() + 1 if n_series else 0
    n_strikes = ser.strike_id.max() + 1 if n_series else 0

    bk = new_book(n_series)
    account = np.zeros(1, ACCOUNT_DTYPE)
    acct = account[0]  # a view: `account` must stay alive until the end (see the return)
    imp = Impact(
        np.zeros(n_expiries), np.zeros(n_strikes), np.zeros(n_expiries), np.zeros(n_strikes)
    )
    pending = PendingHedges(np.zeros(hedging.latency + 1), np.zeros(hedging.latency + 1, np.int8))
    capacity = lp_rows.tick.shape[0] + n_ticks
    queue = WithdrawalQueue(np.zeros(capacity, np.int64), np.zeros(capacity))
    log_iv_sum = np.zeros(n_ticks + 1)
    for t in range(n_ticks):
        log_iv_sum[t + 1] = log_iv_sum[t] + math.log(mk.iv[t])

    acct.cash = pool.initial_capital
    acct.cash_prev = pool.initial_capital
    acct.nav = pool.initial_capital
    acct.free_prev = pool.initial_capital
    acct.shares = pool.initial_capital  # one share = one unit of quote currency at the start
    acct.peak_nps = 1.0
    acct.run_level = lp_params.run_drawdown
    acct.last_bucket = -1
    acct.halt_until = np.iinfo(np.int64).min

    for t in range(n_ticks):
        row = out.steps[t]
        if t > 0:
            instrument.mark_hedge(acct, row, mk.spot[t] - mk.spot[t - 1], hedging)
            impact.begin_tick(imp, mk.ts[t] - mk.ts[t - 1], pricing)
            attribution.mark_book(t, mk, ser, surf, imp, bk, acct, row, out.series, pricing)
            book.settle(bk, acct, ser, mk.ts[t])
            carry.fund(t, mk, acct, row, pool, hedging)
        book.revalue(bk, acct, ser, mk.spot[t], hedging)
        collateral.refresh(t, mk, ser, bk, acct, pool, hedging)
        circuit_breaker(t, mk, log_iv_sum, acct, pricing)
        trade(t, mk, ser, surf, imp, flow, bk, acct, row, out, pool, pricing, hedging)
        if hedging.policy != NO_POLICY:
            hedge.hedge_step(t, mk, pending, bk, acct, row, out.hedges, pool, hedging, slip)
        collateral.liquidate(t, mk, ser, bk, acct, row, out, pool, hedging, slip)
        lp.lp_step(t, mk, ser, lp_rows, queue, bk, acct, row, out, pool, hedging, slip, lp_params)
        if acct.nav < 0.0 or (acct.nav == 0.0 and acct.shares > 0.0):
            acct.insolvent = 1  # equity gone: bad debt, no more flow
        record(t, mk, acct, row, pool, hedging)
        acct.cash_prev = acct.cash
        acct.free_prev = acct.cash - acct.locked_cash
    # Read through `account`, not `acct`: numba frees an array after its last use, and a record
    # view does not keep it alive, so `acct` would otherwise point into freed memory.
    done = account[0]
    return done.n_hedges, done.n_closes, done.n_lp_events


@njit(cache=True, parallel=True)
def run_paths(
    mk,
    tick_offsets,
    ser,
    surf,
    flow,
    flow_offsets,
    lp_rows,
    pool,
    pricing,
    hedging,
    slip,
    lp_params,
    out,
    offsets,
):
    """Every path in parallel; path k writes only its own slices, so the result equals serial.

    mk, flow and the records hold every path back to back (path k: ticks tick_offsets[k:k+2],
    flow rows flow_offsets[k:k+2], records of kind j (types.RECORD_KINDS) offsets[k:k+2, j]);
    LP flows apply to every path, each with its own ticks (lp_rows.tick[k]). The parameter
    groups come one by one: numba cannot hand a NamedTuple of NamedTuples to a parallel loop's
    body. Returns how many records of each kind each path made.
    """
    n_paths = tick_offsets.shape[0] - 1
    counts = np.zeros((n_paths, 3), np.int64)
    for k in prange(n_paths):
        a, b = tick_offsets[k], tick_offsets[k + 1]
        fa, fb = flow_offsets[k], flow_offsets[k + 1]
        counts[k, 0], counts[k, 1], counts[k, 2] = run_path(
            MarketPath(
                mk.ts[a:b], mk.spot[a:b], mk.iv[a:b], mk.rate[a:b], mk.funding[a:b], mk.snap[a:b]
            ),
            ser,
            surf,
            FlowRows(flow.tick[fa:fb], flow.series[fa:fb], flow.side[fa:fb], flow.size[fa:fb]),
            LpRows(lp_rows.tick[k], lp_rows.amount),
            pool,
            pricing,
            hedging,
            slip,
            lp_params,
            Records(
                out.steps[a:b],
                out.trades[fa:fb],
                out.hedges[offsets[k, 0] : offsets[k + 1, 0]],
                out.series[k],
                out.closes[offsets[k, 1] : offsets[k + 1, 1]],
                out.lp[offsets[k, 2] : offsets[k + 1, 2]],
            ),
        )
    return counts
