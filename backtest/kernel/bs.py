"""Black–Scholes price and greeks for the event loop: European, no carry, one contract per unit.

`kind` is +1.0 (call) or -1.0 (put) so calls and puts share one formula. Inputs are assumed valid
(spot > 0, strike > 0, tau >= 0, vol >= 0); the public wrappers in `backtest.pricing` check them.
Greeks: delta, gamma, vega (per 1.00 of vol), theta (per year, = -dV/dtau), vanna, volga.
"""

import math

from numba import njit

_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
# Below this total standard deviation vol*sqrt(tau) the formula divides by ~0; the option is then
# worth its discounted intrinsic value to within about 0.4 * spot * 1e-12.
_MIN_STDDEV = 1e-12
# pdf(d) is exactly 0.0 and cdf(d) exactly 0 or 1 in float64 far before |d| = 1e6; clamping keeps
# an infinite d (vol * sqrt(tau) overflowing) from turning 0 * inf into NaN in the greeks.
_MAX_D = 1e6
# From here up N(x) is 1.0 to the last bit (its tail is below 2**-54), so no erfc is needed: the
# in-the-money side of a deep option costs no exp (glibc's erfc spends two on such a tail).
_CDF_ONE = 8.5


# inline: runs per series-tick; with nothing inlined the kernel is 1.23x the greeks floor
# instead of 1.04x (200k-tick board, bench)
@njit(cache=True, inline="always")
def tail(x):
    """min(N(x), N(-x)) via erfc, at full relative accuracy however far out: the one erfc a call
    and a put at the same strike share (N(x) and N(-x) both follow from it)."""
    return 0.5 * math.erfc(abs(x) / _SQRT2)


# inline: runs per series-tick; with nothing inlined the kernel is 1.23x the greeks floor
# instead of 1.04x (200k-tick board, bench)
@njit(cache=True, inline="always")
def from_tail(x, q):
    """N(x) given q = tail(x): the tail itself below 0, its complement above."""
    return q if x < 0.0 else 1.0 - q


# inline: runs per series-tick; with nothing inlined the kernel is 1.23x the greeks floor
# instead of 1.04x (200k-tick board, bench)
@njit(cache=True, inline="always")
def norm_cdf(x):
    """Standard normal CDF, with full relative accuracy in the lower tail."""
    if x >= _CDF_ONE:
        return 1.0
    return from_tail(x, tail(x))


# inline: runs per series-tick; with nothing inlined the kernel is 1.23x the greeks floor
# instead of 1.04x (200k-tick board, bench)
@njit(cache=True, inline="always")
def norm_pdf(x):
    return _INV_SQRT_2PI * math.exp(-0.5 * x * x)


# inline: runs per series-tick; with nothing inlined the kernel is 1.23x the greeks floor
# instead of 1.04x (200k-tick board, bench)
@njit(cache=True, inline="always")
def _intrinsic(kind, spot, strike):
    """Value and delta with no variance left: a step in spot, delta 0.5*kind exactly on the kink."""
    gap = kind * (spot - strike)
    if gap > 0.0:
        return gap, kind
    if gap < 0.0:
        return 0.0, 0.0
    return 0.0, 0.5 * kind


@njit(cache=True)
def terms(spot, strike, tau, rate):
    """(log spot, log strike, sqrt tau, discount factor): the parts of a valuation that series
    sharing a tick, a strike or an expiry can share (valuation.py computes each once)."""
    return math.log(spot), math.log(strike), math.sqrt(max(tau, 0.0)), math.exp(-rate * tau)


# inline: runs per series-tick; with nothing inlined the kernel is 1.23x the greeks floor
# instead of 1.04x (200k-tick board, bench)
@njit(cache=True, inline="always")
def flat_case(kind, spot, strike, tau, stddev, disc, rate):
    """(is_flat, price, delta, theta) for the cases the closed form cannot divide through.

    Expired (tau <= 0): intrinsic, theta 0. No variance (vol*sqrt(tau) tiny): intrinsic against
    the discounted strike K e^{-r tau}, whose time decay is -r K e^{-r tau} * delta.
    """
    if tau <= 0.0:
        price, delta = _intrinsic(kind, spot, strike)
        return True, price, delta, 0.0
    if stddev >= _MIN_STDDEV:
        return False, 0.0, 0.0, 0.0
    disc_strike = strike * disc
    price, delta = _intrinsic(kind, spot, disc_strike)
    return True, price, delta, -rate * disc_strike * delta


# inline: runs per series-tick; with nothing inlined the kernel is 1.23x the greeks floor
# instead of 1.04x (200k-tick board, bench)
@njit(cache=True, inline="always")
def _d1_d2(log_spot, log_strike, tau, stddev, rate):
    """d1, d2 from logs, without forming vol**2 or spot/strike, so neither can overflow."""
    m = (log_spot - log_strike + rate * tau) / stddev
    d1 = min(max(m + 0.5 * stddev, -_MAX_D), _MAX_D)
    d2 = min(max(m - 0.5 * stddev, -_MAX_D), _MAX_D)
    return d1, d2


# inline: runs per series-tick; with nothing inlined the kernel is 1.23x the greeks floor
# instead of 1.04x (200k-tick board, bench)
@njit(cache=True, inline="always")
def _value(kind, spot, disc_strike, d1, d2):
    """Price plus N(kind*d1), N(kind*d2), which the greeks reuse.

    The floor at 0 removes rounding residue (~1e-16 * spot) when the two terms nearly cancel.
    """
    n1 = norm_cdf(kind * d1)
    n2 = norm_cdf(kind * d2)
    return max(kind * (spot * n1 - disc_strike * n2), 0.0), n1, n2


# inline: runs per series-tick; with nothing inlined the kernel is 1.23x the greeks floor
# instead of 1.04x (200k-tick board, bench)
@njit(cache=True, inline="always")
def price_from_terms(kind, spot, log_spot, strike, log_strike, tau, sqrt_tau, disc, vol, rate):
    stddev = vol * sqrt_tau
    flat, price, _, _ = flat_case(kind, spot, strike, tau, stddev, disc, rate)
    if flat:
        return price
    d1, d2 = _d1_d2(log_spot, log_strike, tau, stddev, rate)
    return _value(kind, spot, strike * disc, d1, d2)[0]


# inline: runs per series-tick; with nothing inlined the kernel is 1.23x the greeks floor
# instead of 1.04x (200k-tick board, bench)
@njit(cache=True, inline="always")
def strike_greeks(spot, log_spot, log_strike, tau, sqrt_tau, vol, rate):
    """(d1, d2, pdf(d1), gamma, vega, vanna, volga): everything of a valuation that the call
    and the put at one strike, expiry and vol have in common, besides tail(d1) and tail(d2)."""
    d1, d2 = _d1_d2(log_spot, log_strike, tau, vol * sqrt_tau, rate)
    pdf = norm_pdf(d1)
    # Products are ordered so a zero pdf zeroes them before a huge factor can reach inf.
    gamma = pdf / (spot * vol * sqrt_tau)
    vega = spot * pdf * sqrt_tau
    vanna = -pdf * d2 / vol
    volga = vega * d1 * d2 / vol
    return d1, d2, pdf, gamma, vega, vanna, volga


# inline: runs per series-tick; with nothing inlined the kernel is 1.23x the greeks floor
# instead of 1.04x (200k-tick board, bench)
@njit(cache=True, inline="always")
def kind_greeks(kind, spot, disc_strike, sqrt_tau, vol, rate, n1, n2, pdf):
    """(price, delta, theta) of a call or put from its strike's strike_greeks and
    n1 = N(kind d1), n2 = N(kind d2)."""
    price = max(kind * (spot * n1 - disc_strike * n2), 0.0)
    theta = -spot * pdf * vol / (2.0 * sqrt_tau) - kind * rate * disc_strike * n2
    return price, kind * n1, theta


# inline: runs per series-tick; with nothing inlined the kernel is 1.23x the greeks floor
# instead of 1.04x (200k-tick board, bench)
@njit(cache=True, inline="always")
def greeks_from_terms(kind, spot, log_spot, strike, log_strike, tau, sqrt_tau, disc, vol, rate):
    """(price, delta, gamma, vega, theta, vanna, volga) from one d1/d2 evaluation, given terms()."""
    flat, price, delta, theta = flat_case(kind, spot, strike, tau, vol * sqrt_tau, disc, rate)
    if flat:
        return price, delta, 0.0, 0.0, theta, 0.0, 0.0
    d1, d2, pdf, gamma, vega, vanna, volga = strike_greeks(
        spot, log_spot, log_strike, tau, sqrt_tau, vol, rate
    )
    n1, n2 = norm_cdf(kind * d1), norm_cdf(kind * d2)
    price, delta, theta = kind_greeks(kind, spot, strike * disc, sqrt_tau, vol, rate, n1, n2, pdf)
    return price, delta, gamma, vega, theta, vanna, volga


@njit(cache=True)
def bs_price(kind, spot, strike, tau, vol, rate):
    log_spot, log_strike, sqrt_tau, disc = terms(spot, strike, tau, rate)
    return price_from_terms(
        kind, spot, log_spot, strike, log_strike, tau, sqrt_tau, disc, vol, rate
    )


@njit(cache=True)
def bs_greeks(kind, spot, strike, tau, vol, rate):
    """(price, delta, gamma, vega, theta, vanna, volga) from one d1/d2 evaluation."""
    log_spot, log_strike, sqrt_tau, disc = terms(spot, strike, tau, rate)
    return greeks_from_terms(
        kind, spot, log_spot, strike, log_strike, tau, sqrt_tau, disc, vol, rate
    )


@njit(cache=True)
def price_many(kind, spot, strike, tau, vol, rate, out):
    """Prices of equal-length 1-D float64 arrays into `out`."""
    for i in range(out.shape[0]):
        out[i] = bs_price(kind[i], spot[i], strike[i], tau[i], vol[i], rate[i])


@njit(cache=True)
def greeks_many(kind, spot, strike, tau, vol, rate, out):
    """Greeks of equal-length 1-D float64 arrays into rows of `out` (6, n):
    delta, gamma, vega, theta, vanna, volga."""
    for i in range(out.shape[1]):
        _, delta, gamma, vega, theta, vanna, volga = bs_greeks(
            kind[i], spot[i], strike[i], tau[i], vol[i], rate[i]
        )
        out[0, i] = delta
        out[1, i] = gamma
        out[2, i] = vega
        out[3, i] = theta
        out[4, i] = vanna
        out[5, i] = volga
