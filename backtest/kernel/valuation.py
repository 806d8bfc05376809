"""What a series is worth at a tick: its vol (surface or ATM + smile, plus the tick's inventory
impact snapshot) and its Black-Scholes price and greeks, cached in the book for the rest of the
tick; and the price a fill pays for the vol move it causes itself.

Series share work (SharedTerms): the terms of an expiry (tau, sqrt tau, discount, forward) are
computed once per tick, and so is what a call and a put at one strike have in common (d1, d2,
both erfc tails, the pdf, gamma, vega, vanna, volga), so the second of the pair costs a few
products; log spot once per tick, log strike once per run (Book.log_strike).
"""

import math

from numba import njit

from backtest.kernel.bs import (
    flat_case,
    from_tail,
    greeks_from_terms,
    kind_greeks,
    price_from_terms,
    strike_greeks,
    tail,
)
from backtest.kernel.surface import surface_vol

NS_PER_YEAR = 365.0 * 86_400.0 * 1e9
MIN_VOL = 0.01  # floor of the smile, so a steep skew never prices at zero vol


# inline: runs per series-tick; with nothing inlined the kernel is 1.23x the greeks floor
# instead of 1.04x (200k-tick board, bench)
@njit(cache=True, inline="always")
def expiry_terms(terms, e, t, expiry_ns, now, s_t, r_t):
    """Expiry e's shared terms, computed on the first series of e valued in tick t."""
    if terms.at[e] != t:
        tau = (expiry_ns - now) / NS_PER_YEAR
        terms.tau[e] = tau
        terms.sqrt_tau[e] = math.sqrt(max(tau, 0.0))
        terms.disc[e] = math.exp(-r_t * tau)
        terms.forward[e] = s_t * math.exp(r_t * max(tau, 0.0))
        terms.at[e] = t


# inline: runs per series-tick; with nothing inlined the kernel is 1.23x the greeks floor
# instead of 1.04x (200k-tick board, bench)
@njit(cache=True, inline="always")
def smile_on(snap, pricing):
    """Whether vols depend on moneyness this tick (else the log-moneyness is never needed)."""
    return snap >= 0 or pricing.skew_slope != 0.0 or pricing.smile_curvature != 0.0


# inline: runs per series-tick; with nothing inlined the kernel is 1.23x the greeks floor
# instead of 1.04x (200k-tick board, bench)
@njit(cache=True, inline="always")
def base_vol(snap, atm, tau, k, surf, pricing):
    """The market's vol at (tau, k = ln K/F): the surface snapshot, or ATM iv + smile."""
    if snap >= 0:
        return surface_vol(surf.vols[snap], surf.tenors, surf.log_moneyness, max(tau, 1e-9), k)
    return atm + pricing.skew_slope * k + pricing.smile_curvature * k * k


# inline: runs per series-tick; with nothing inlined the kernel is 1.23x the greeks floor
# instead of 1.04x (200k-tick board, bench)
@njit(cache=True, inline="always")
def market_vol(i, snap, atm, ser, surf, terms, pricing):
    """Series i's vol in the market, before the pool's inventory impact (its expiry's terms are
    current): what the pool marks at without impact, and what a reference venue quotes around."""
    e = ser.expiry_id[i]
    k = math.log(ser.strike[i] / terms.forward[e]) if smile_on(snap, pricing) else 0.0
    return base_vol(snap, atm, terms.tau[e], k, surf, pricing)


# inline: runs per series-tick; with nothing inlined the kernel is 1.23x the greeks floor
# instead of 1.04x (200k-tick board, bench)
@njit(cache=True, inline="always")
def strike_terms(terms, n, t, s_t, log_s, log_strike, tau, sqrt_tau, vol, r_t):
    """Strike n's shared terms at `vol`, computed on the first series of n valued in tick t."""
    if terms.strike_at[n] != t:
        d1, d2, pdf, gamma, vega, vanna, volga = strike_greeks(
            s_t, log_s, log_strike, tau, sqrt_tau, vol, r_t
        )
        terms.d1[n] = d1
        terms.d2[n] = d2
        terms.tail1[n] = tail(d1)
        terms.tail2[n] = tail(d2)
        terms.pdf[n] = pdf
        terms.gamma[n] = gamma
        terms.vega[n] = vega
        terms.vanna[n] = vanna
        terms.volga[n] = volga
        terms.vol[n] = vol
        terms.strike_at[n] = t


# inline: runs per series-tick; with nothing inlined the kernel is 1.23x the greeks floor
# instead of 1.04x (200k-tick board, bench)
@njit(cache=True, inline="always")
def shared_greeks(i, t, s_t, log_s, r_t, kind, strike, n, tau, sqrt_tau, disc, vol, terms, book):
    """bs.greeks_from_terms of series i, to the same bits, from its strike's shared terms."""
    flat, price, delta, theta = flat_case(kind, s_t, strike, tau, vol * sqrt_tau, disc, r_t)
    if flat:
        return price, delta, 0.0, 0.0, theta, 0.0, 0.0
    strike_terms(terms, n, t, s_t, log_s, book.log_strike[i], tau, sqrt_tau, vol, r_t)
    d1, d2 = terms.d1[n], terms.d2[n]
    n1 = from_tail(kind * d1, terms.tail1[n])
    n2 = from_tail(kind * d2, terms.tail2[n])
    price, delta, theta = kind_greeks(
        kind, s_t, strike * disc, sqrt_tau, vol, r_t, n1, n2, terms.pdf[n]
    )
    return price, delta, terms.gamma[n], terms.vega[n], theta, terms.vanna[n], terms.volga[n]


# inline: runs per series-tick; with nothing inlined the kernel is 1.23x the greeks floor
# instead of 1.04x (200k-tick board, bench)
@njit(cache=True, inline="always")
def value_series(i, t, now, s_t, log_s, atm, r_t, snap, ser, surf, impact, terms, book, pricing):
    """Value series i at tick t (the market as scalars) into the book's valuation cache: the
    same numbers as bs.greeks_from_terms, with the strike's part shared."""
    e = ser.expiry_id[i]
    expiry_terms(terms, e, t, ser.expiry[i], now, s_t, r_t)
    tau, sqrt_tau, disc = terms.tau[e], terms.sqrt_tau[e], terms.disc[e]
    n = ser.strike_id[i]
    sibling = book.sibling[i]
    shared = sibling >= 0 and book.qty[sibling] != 0.0  # the other kind is held: valued this tick
    if shared and terms.strike_at[n] == t:
        vol = terms.vol[n]  # the other kind's: its market vol and impact depend on the strike only
    else:
        move = impact.expiry_snap[e] + impact.strike_snap[n]
        vol = max(market_vol(i, snap, atm, ser, surf, terms, pricing) + move, MIN_VOL)
    kind, strike = ser.kind[i], ser.strike[i]
    if shared:
        price, delta, gamma, vega, theta, vanna, volga = shared_greeks(
            i, t, s_t, log_s, r_t, kind, strike, n, tau, sqrt_tau, disc, vol, terms, book
        )
    else:  # keeping the strike's terms would only cost stores
        price, delta, gamma, vega, theta, vanna, volga = greeks_from_terms(
            kind, s_t, log_s, strike, book.log_strike[i], tau, sqrt_tau, disc, vol, r_t
        )
    book.price[i] = price
    book.delta[i] = delta
    book.gamma[i] = gamma
    book.vega[i] = vega
    book.theta[i] = theta
    book.vanna[i] = vanna
    book.volga[i] = volga
    book.sigma[i] = vol
    book.valued_at[i] = t


@njit(cache=True)
def price_at(i, s_t, r_t, vol, ser, terms, book):
    """Series i's Black-Scholes price at `vol`; series i was valued in this tick, so its
    expiry's terms are current."""
    e = ser.expiry_id[i]
    return price_from_terms(
        ser.kind[i],
        s_t,
        math.log(s_t),
        ser.strike[i],
        book.log_strike[i],
        terms.tau[e],
        terms.sqrt_tau[e],
        terms.disc[e],
        vol,
        r_t,
    )


@njit(cache=True)
def fill_price(i, s_t, r_t, ser, terms, book, move):
    """(vol, price) a fill pays when it moves series i's vol by `move` itself: the vol half way
    through the move, so a fill pays the average of the prices it walks through."""
    paid = max(book.sigma[i] + 0.5 * move, MIN_VOL)
    return paid, price_at(i, s_t, r_t, paid, ser, terms, book)


@njit(cache=True)
def valued(i, t, mk, ser, surf, imp, terms, book, pricing):
    """Series i valued at tick t unless it already is: for the valuations outside the mark
    loop (a series the flow trades before any position holds it, a listed option the vega
    hedge looks at). Not inlined, so they share one compiled copy of value_series instead of
    each compiling their own (2.4 s of the cold compile each)."""
    if book.valued_at[i] != t:
        s_t = mk.spot[t]
        log_s = math.log(s_t)
        value_series(
            i,
            t,
            mk.ts[t],
            s_t,
            log_s,
            mk.iv[t],
            mk.rate[t],
            mk.snap[t],
            ser,
            surf,
            imp,
            terms,
            book,
            pricing,
        )
