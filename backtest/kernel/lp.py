"""LP deposits and withdrawals at NAV per share, the withdrawal queue and the run rule."""

from numba import njit

from backtest.kernel.collateral import shrink


# inline: a step of the tick; all steps un-inlined cost 0.33 s vs 0.17 s on 200k flat ticks
@njit(cache=True, inline="always")
def lp_step(t, mk, ser, lp_rows, queue, book, acct, row, records, pool, hedge, slip, lp):
    """Deposits mint shares at NAV per share; withdrawals wait withdrawal_delay, pay the fee to
    the LPs who stay, and force the book to shrink when collateral would not fit."""
    now = mk.ts[t]
    nps = acct.nav / acct.shares if acct.shares > 0.0 else 0.0
    acct.lp_flow = 0.0
    n_rows = lp_rows.tick.shape[0]
    while acct.lp_at < n_rows and lp_rows.tick[acct.lp_at] < t:  # rows before the window
        acct.lp_at += 1
    while acct.lp_at < n_rows and lp_rows.tick[acct.lp_at] == t:
        r = acct.lp_at
        acct.lp_at += 1
        if nps <= 0.0:
            continue
        amount = lp_rows.amount[r]
        if amount > 0.0:
            acct.shares += amount / nps
            acct.cash += amount
            acct.nav += amount
            acct.lp_flow += amount
        else:
            queue.due[acct.wq_tail] = now + lp.withdrawal_delay
            queue.shares[acct.wq_tail] = -amount / nps
            acct.wq_tail += 1
    # The run rule: each further run_drawdown of drawdown in NAV per share sends run_fraction out.
    if lp.run_drawdown > 0.0 and nps > 0.0 and acct.shares > 0.0:
        if nps > acct.peak_nps:
            acct.peak_nps = nps
            acct.run_level = lp.run_drawdown
        if 1.0 - nps / acct.peak_nps >= acct.run_level:
            queue.due[acct.wq_tail] = now + lp.withdrawal_delay
            queue.shares[acct.wq_tail] = lp.run_fraction * acct.shares
            acct.wq_tail += 1
            acct.run_level += lp.run_drawdown
    while acct.wq_head < acct.wq_tail and queue.due[acct.wq_head] <= now:
        shares = min(queue.shares[acct.wq_head], acct.shares)
        acct.wq_head += 1
        nps = acct.nav / acct.shares if acct.shares > 0.0 else 0.0
        payout = shares * max(nps, 0.0) * (1.0 - lp.withdrawal_fee)
        if payout <= 0.0:
            continue
        shrink(t, mk, ser, book, acct, row, records, payout, pool, hedge, slip)
        payout = min(payout, max(acct.nav, 0.0))
        acct.shares -= shares
        acct.cash -= payout
        acct.nav -= payout
        acct.lp_flow -= payout
