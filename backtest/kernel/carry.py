"""Step 3, fund: what holding cash and the hedge earns or costs over (t-1, t]."""

from numba import njit

from backtest.kernel.instrument import funding_paid
from backtest.kernel.valuation import NS_PER_YEAR


# inline: a step of the tick; all steps un-inlined cost 0.33 s vs 0.17 s on 200k flat ticks
@njit(cache=True, inline="always")
def fund(t, mk, acct, row, pool, hedge):
    """Idle yield on the free capital of t-1, and the hedge's funding."""
    dt = (mk.ts[t] - mk.ts[t - 1]) / NS_PER_YEAR
    interest = pool.idle_yield * max(acct.free_prev, 0.0) * dt
    paid = funding_paid(acct, mk.spot[t - 1], mk.funding[t - 1], dt, hedge)
    acct.cash += interest + paid
    row.pnl_interest += interest
    row.pnl_funding += paid
