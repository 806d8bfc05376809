"""The benchmark's floor: one Black-Scholes price, delta, gamma and vega per series-tick and
nothing else, in the plainest loop. A kernel that values each live series once per tick can only
beat it by sharing work between series, so `dhlp bench` reports the kernel as a multiple of it.
"""

from numba import njit

from backtest.kernel.bs import _d1_d2, _value, norm_pdf, terms
from backtest.kernel.valuation import NS_PER_YEAR


@njit(cache=True)
def price_delta_gamma_vega(kind, spot, strike, tau, vol, rate):
    log_spot, log_strike, sqrt_tau, disc = terms(spot, strike, tau, rate)
    d1, d2 = _d1_d2(log_spot, log_strike, tau, vol * sqrt_tau, rate)
    price, n1, _ = _value(kind, spot, strike * disc, d1, d2)
    pdf = norm_pdf(d1)
    return price, kind * n1, pdf / (spot * vol * sqrt_tau), spot * pdf * sqrt_tau


@njit(cache=True)
def greeks_floor(ts, spot, iv, rate, expiry, strike, kind, first_tick, last_tick):
    """Value series i at every tick in [first_tick[i], last_tick[i]) at the tick's ATM vol;
    returns (series-ticks valued, a checksum that keeps the work from being optimised away)."""
    total = 0.0
    n = 0
    for i in range(expiry.shape[0]):
        for t in range(first_tick[i], last_tick[i]):
            tau = (expiry[i] - ts[t]) / NS_PER_YEAR
            p, d, g, v = price_delta_gamma_vega(kind[i], spot[t], strike[i], tau, iv[t], rate[t])
            total += p + d + g + v
            n += 1
    return n, total
