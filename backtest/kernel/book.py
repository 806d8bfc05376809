"""The option book as positions: opening and closing them, settling expiries, and its totals.

Every position change goes through `change_position`, so the live list, dust, the book's
running greeks and the exposures collateral reads (short calls, strikes of short puts, value of
long options) can never disagree with the quantities.
"""

from numba import njit

from backtest.kernel.instrument import hedge_value

DUST = 1e-9  # contracts: a smaller position is closed out, a smaller fill or close is rounding


# inline: runs per series-tick; with nothing inlined the kernel is 1.23x the greeks floor
# instead of 1.04x (200k-tick board, bench)
@njit(cache=True, inline="always")
def exposure(q, kind, strike, mark):
    """(short call contracts, strike x short put contracts, long value) of one position."""
    if q < 0.0:
        return (-q, 0.0, 0.0) if kind > 0 else (0.0, -q * strike, 0.0)
    return 0.0, 0.0, q * mark


@njit(cache=True)
def drop_live(book, acct, i):
    for j in range(acct.n_live):
        if book.live[j] == i:
            acct.n_live -= 1
            book.live[j] = book.live[acct.n_live]
            return


@njit(cache=True)
def change_position(book, acct, ser, i, dq, mark):
    """Move series i's position by dq at its mark: greeks, exposures, live list and dust follow.
    The caller moves the cash."""
    q0 = book.qty[i]
    c0, p0, l0 = exposure(q0, ser.kind[i], ser.strike[i], mark)
    book.qty[i] += dq
    if abs(book.qty[i]) < DUST:
        acct.cash += book.qty[i] * mark  # closing dust at its mark leaves NAV unchanged
        book.qty[i] = 0.0
    q1 = book.qty[i]
    if q0 == 0.0 and q1 != 0.0:
        book.live[acct.n_live] = i
        acct.n_live += 1
    elif q0 != 0.0 and q1 == 0.0:
        drop_live(book, acct, i)
    c1, p1, l1 = exposure(q1, ser.kind[i], ser.strike[i], mark)
    acct.short_calls += c1 - c0
    acct.short_put_strikes += p1 - p0
    acct.long_value += l1 - l0
    acct.book_value += dq * mark
    acct.book_delta += dq * book.delta[i]
    acct.book_gamma += dq * book.gamma[i]
    acct.book_vega += dq * book.vega[i]
    acct.book_theta += dq * book.theta[i]


# inline: a step of the tick; with nothing inlined the kernel is 1.23x the greeks floor
# instead of 1.04x (200k-tick board, bench)
@njit(cache=True, inline="always")
def settle(book, acct, ser, now):
    """Expired series pay intrinsic at this tick's spot, which is already their mark."""
    j = acct.n_live - 1
    while j >= 0:
        i = book.live[j]
        if ser.expiry[i] <= now:
            acct.cash += book.qty[i] * book.price[i]
            book.qty[i] = 0.0
            acct.n_live -= 1
            book.live[j] = book.live[acct.n_live]
        j -= 1


# inline: a step of the tick; with nothing inlined the kernel is 1.23x the greeks floor
# instead of 1.04x (200k-tick board, bench)
@njit(cache=True, inline="always")
def revalue(book, acct, ser, s_t, hedge):
    """Book value, greeks and exposures from the cached valuations; NAV = cash + book + hedge.
    Between revaluations change_position keeps them current."""
    value = 0.0
    delta = 0.0
    gamma = 0.0
    vega = 0.0
    theta = 0.0
    short_calls = 0.0
    short_put_strikes = 0.0
    long_value = 0.0
    for j in range(acct.n_live):
        i = book.live[j]
        q = book.qty[i]
        value += q * book.price[i]
        delta += q * book.delta[i]
        gamma += q * book.gamma[i]
        vega += q * book.vega[i]
        theta += q * book.theta[i]
        c, p, lv = exposure(q, ser.kind[i], ser.strike[i], book.price[i])
        short_calls += c
        short_put_strikes += p
        long_value += lv
    acct.book_value = value
    acct.book_delta = delta
    acct.book_gamma = gamma
    acct.book_vega = vega
    acct.book_theta = theta
    acct.short_calls = short_calls
    acct.short_put_strikes = short_put_strikes
    acct.long_value = long_value
    acct.nav = acct.cash + value + hedge_value(acct, s_t, hedge)
