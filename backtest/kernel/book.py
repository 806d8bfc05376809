"""The option book as positions: opening and closing them, settling expiries, and its totals.

Every position change goes through `change_position`, so the live list, dust and the book's
running greeks can never disagree with the quantities.
"""

from numba import njit

from backtest.kernel.instrument import hedge_value

DUST = 1e-9  # positions smaller than this (contracts) are closed out


# inline: called per series-tick; 1.53 s -> 1.47 s on a 200k-tick board (bench, 2 cores)
@njit(cache=True, inline="always")
def store_valuation(book, i, t, v):
    """Cache series i's valuation v (valuation.value_series) as of tick t."""
    book.price[i] = v[0]
    book.delta[i] = v[1]
    book.gamma[i] = v[2]
    book.vega[i] = v[3]
    book.theta[i] = v[4]
    book.vanna[i] = v[5]
    book.volga[i] = v[6]
    book.sigma[i] = v[7]
    book.valued_at[i] = t


@njit(cache=True)
def drop_live(book, acct, i):
    for j in range(acct.n_live):
        if book.live[j] == i:
            acct.n_live -= 1
            book.live[j] = book.live[acct.n_live]
            return


@njit(cache=True)
def change_position(book, acct, i, dq, mark):
    """Move series i's position by dq at its mark: greeks, live list and dust follow."""
    was_open = book.qty[i] != 0.0
    book.qty[i] += dq
    if abs(book.qty[i]) < DUST:
        acct.cash += book.qty[i] * mark  # closing dust at its mark leaves NAV unchanged
        book.qty[i] = 0.0
    if not was_open and book.qty[i] != 0.0:
        book.live[acct.n_live] = i
        acct.n_live += 1
    elif was_open and book.qty[i] == 0.0:
        drop_live(book, acct, i)
    acct.book_value += dq * mark
    acct.book_delta += dq * book.delta[i]
    acct.book_gamma += dq * book.gamma[i]
    acct.book_vega += dq * book.vega[i]


# inline: a step of the tick; all steps un-inlined cost 0.33 s vs 0.17 s on 200k flat ticks
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


# inline: a step of the tick; all steps un-inlined cost 0.33 s vs 0.17 s on 200k flat ticks
@njit(cache=True, inline="always")
def book_theta(book, acct):
    theta = 0.0
    for j in range(acct.n_live):
        i = book.live[j]
        theta += book.qty[i] * book.theta[i]
    return theta


# inline: a step of the tick; all steps un-inlined cost 0.33 s vs 0.17 s on 200k flat ticks
@njit(cache=True, inline="always")
def revalue(book, acct, s_t, hedge):
    """Book value and greeks from the cached valuations, and NAV = cash + book + hedge."""
    value = 0.0
    delta = 0.0
    gamma = 0.0
    vega = 0.0
    for j in range(acct.n_live):
        i = book.live[j]
        q = book.qty[i]
        value += q * book.price[i]
        delta += q * book.delta[i]
        gamma += q * book.gamma[i]
        vega += q * book.vega[i]
    acct.book_value = value
    acct.book_delta = delta
    acct.book_gamma = gamma
    acct.book_vega = vega
    acct.nav = acct.cash + value + hedge_value(acct, s_t, hedge)
