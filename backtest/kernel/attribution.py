"""Step 1, mark: revalue the book held since t-1 and split each series' move into greeks.

With the greeks of t-1 and the moves dS, dsigma (per series) and dt: delta dS, 1/2 gamma dS^2,
vega dsigma, theta dt, vanna dS dsigma, 1/2 volga dsigma^2, and the residual that makes the sum
equal the full revaluation. A series that expired since t-1 earns theta only up to its expiry
(it settles at this tick's spot, the first tick at or after expiry). Each component is added to
the tick's steps row and to the series' lifetime record.
"""

import math

from numba import njit

from backtest.kernel.valuation import NS_PER_YEAR, value_series


# inline: runs per series-tick; with nothing inlined the kernel is 1.23x the greeks floor
# instead of 1.04x (200k-tick board, bench)
@njit(cache=True, inline="always")
def add(record, delta, gamma, vega, theta, vanna, volga, residual):
    """Add a move's components to a steps row or a series record (both carry these fields)."""
    record.pnl_delta += delta
    record.pnl_gamma += gamma
    record.pnl_vega += vega
    record.pnl_theta += theta
    record.pnl_vanna += vanna
    record.pnl_volga += volga
    record.pnl_residual += residual


# inline: a step of the tick; with nothing inlined the kernel is 1.23x the greeks floor
# instead of 1.04x (200k-tick board, bench)
@njit(cache=True, inline="always")
def mark_book(t, mk, ser, surf, impact, terms, book, acct, row, series_out, pricing):
    now, s_t, atm, r_t, snap = mk.ts[t], mk.spot[t], mk.iv[t], mk.rate[t], mk.snap[t]
    log_s = math.log(s_t)
    prev = mk.ts[t - 1]
    ds = mk.spot[t] - mk.spot[t - 1]
    for j in range(acct.n_live):
        i = book.live[j]
        q = book.qty[i]
        old_price = book.price[i]
        d_ = book.delta[i]
        g_ = book.gamma[i]
        v_ = book.vega[i]
        th_ = book.theta[i]
        va_ = book.vanna[i]
        vo_ = book.volga[i]
        old_vol = book.sigma[i]
        value_series(i, t, now, s_t, log_s, atm, r_t, snap, ser, surf, impact, terms, book, pricing)
        dv = book.sigma[i] - old_vol
        dt = (min(ser.expiry[i], now) - prev) / NS_PER_YEAR
        c_delta = q * d_ * ds
        c_gamma = 0.5 * q * g_ * ds * ds
        c_vega = q * v_ * dv
        c_theta = q * th_ * dt
        c_vanna = q * va_ * ds * dv
        c_volga = 0.5 * q * vo_ * dv * dv
        c_res = q * (book.price[i] - old_price) - (
            c_delta + c_gamma + c_vega + c_theta + c_vanna + c_volga
        )
        add(row, c_delta, c_gamma, c_vega, c_theta, c_vanna, c_volga, c_res)
        add(series_out[i], c_delta, c_gamma, c_vega, c_theta, c_vanna, c_volga, c_res)
