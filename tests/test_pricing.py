"""Black–Scholes prices and greeks: published values, identities, finite differences, limits."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backtest.kernel import bs
from backtest.pricing import Greeks, greeks, price

GREEK_NAMES = Greeks._fields

kinds = st.sampled_from([1.0, -1.0])
moderate = dict(
    kind=kinds,
    spot=st.floats(10.0, 1000.0),
    moneyness=st.floats(-1.0, 1.0),
    tau=st.floats(0.02, 3.0),
    vol=st.floats(0.05, 1.5),
    rate=st.floats(-0.05, 0.15),
)
extreme = dict(
    kind=kinds,
    spot=st.floats(1e-8, 1e9),
    strike=st.floats(1e-8, 1e9),
    tau=st.one_of(st.just(0.0), st.floats(0.0, 1e-10), st.floats(0.0, 100.0)),
    vol=st.one_of(st.just(0.0), st.floats(0.0, 1e-6), st.floats(0.0, 1e4)),
    rate=st.floats(-1.0, 1.0),
)


def all_finite(*values):
    return all(math.isfinite(v) for v in values)


# --- published values -----------------------------------------------------------------------


def test_hull_example_call_and_put():
    """Hull, Options, Futures and Other Derivatives, Example 15.6: c = 4.76, p = 0.81."""
    assert round(price(1, 42.0, 40.0, 0.5, 0.2, 0.1), 2) == 4.76
    assert round(price(-1, 42.0, 40.0, 0.5, 0.2, 0.1), 2) == 0.81


def test_hull_greeks_example():
    """Hull's running greeks example (ch. 19): S=49, K=50, r=5%, sigma=20%, T=20 weeks."""
    args = (1, 49.0, 50.0, 0.3846, 0.2, 0.05)
    g = greeks(*args)
    assert round(price(*args), 2) == 2.40
    assert round(g.delta, 3) == 0.522
    assert round(g.gamma, 3) == 0.066
    assert round(g.vega, 1) == 12.1
    assert round(g.theta, 2) == -4.31
    assert round(greeks(-1, *args[1:]).delta, 3) == -0.478


def test_haug_examples():
    """Haug, The Complete Guide to Option Pricing Formulas: BS call 2.1334, gamma 0.0278."""
    assert round(price("C", 60.0, 65.0, 0.25, 0.3, 0.08), 4) == 2.1334
    assert round(greeks("C", 55.0, 60.0, 0.75, 0.3, 0.10).gamma, 4) == 0.0278


def test_norm_cdf_tail_keeps_relative_accuracy():
    assert bs.norm_cdf(0.0) == 0.5
    assert bs.norm_cdf(-30.0) == pytest.approx(4.906713927148187e-198, rel=1e-12)
    assert bs.norm_cdf(40.0) == 1.0


@settings(max_examples=300, deadline=None)
@given(x=st.floats(-40.0, 40.0))
def test_one_tail_gives_both_sides_of_the_cdf(x):
    """N(x) and N(-x) come from one erfc (what a call and a put at one strike share): they sum
    to 1, and each agrees with erfc evaluated on its own side to 2 ulp."""
    up, down = bs.norm_cdf(x), bs.norm_cdf(-x)
    assert up + down == pytest.approx(1.0, abs=2.3e-16)
    for y, n in ((x, up), (-x, down)):
        direct = 0.5 * math.erfc(-y / math.sqrt(2.0))
        assert abs(n - direct) <= 2 * math.ulp(direct)
        assert n == bs.from_tail(y, bs.tail(y))  # the shortcut to 1.0 far out changes no bit


def test_the_cdf_is_one_to_the_last_bit_before_its_shortcut():
    assert all(1.0 - bs.tail(x) == 1.0 for x in np.linspace(8.3, 40.0, 2000))
    assert 1.0 - bs.tail(8.0) < 1.0


# --- identities -----------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    spot=st.floats(1e-3, 1e6),
    strike=st.floats(1e-3, 1e6),
    tau=st.floats(0.0, 30.0),
    vol=st.floats(0.0, 5.0),
    rate=st.floats(-0.1, 0.3),
)
def test_put_call_parity(spot, strike, tau, vol, rate):
    call = price("C", spot, strike, tau, vol, rate)
    put = price("P", spot, strike, tau, vol, rate)
    forward_gap = spot - strike * math.exp(-rate * tau)
    assert call - put == pytest.approx(forward_gap, abs=1e-12 * (spot + strike))


@settings(max_examples=300, deadline=None)
@given(**{k: v for k, v in extreme.items() if k != "kind"})
def test_call_put_greek_relations(spot, strike, tau, vol, rate):
    """Calls and puts differ by a forward, which has delta 1 and no other greek except theta."""
    c = greeks("C", spot, strike, tau, vol, rate)
    p = greeks("P", spot, strike, tau, vol, rate)
    assert c.delta - p.delta == pytest.approx(1.0, abs=1e-12)
    for name in ("gamma", "vega", "vanna", "volga"):
        assert getattr(c, name) == getattr(p, name)
    forward_theta = 0.0 if tau == 0.0 else -rate * strike * math.exp(-rate * tau)
    # The shared time-decay term can dwarf the difference, so its rounding sets the tolerance.
    tol = 1e-12 * (abs(c.theta) + abs(p.theta) + strike)
    assert c.theta - p.theta == pytest.approx(forward_theta, rel=1e-9, abs=tol)


@settings(max_examples=200, deadline=None)
@given(**extreme)
def test_kernel_price_agrees_with_greeks(kind, spot, strike, tau, vol, rate):
    full = bs.bs_greeks(kind, spot, strike, tau, vol, rate)
    assert bs.bs_price(kind, spot, strike, tau, vol, rate) == full[0]


# --- finite differences ---------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(**moderate)
def test_greeks_match_finite_differences(kind, spot, moneyness, tau, vol, rate):
    strike = spot * math.exp(moneyness)
    stddev = vol * math.sqrt(tau)

    def v(s=spot, t=tau, sigma=vol):
        return price(kind, s, strike, t, sigma, rate)

    # Steps on each variable's natural scale keep truncation and rounding errors near 1e-7.
    hs, hv, ht = 1e-3 * spot * stddev, 1e-3 * vol, 1e-3 * tau
    fd = dict(
        delta=(v(s=spot + hs) - v(s=spot - hs)) / (2 * hs),
        gamma=(v(s=spot + hs) - 2 * v() + v(s=spot - hs)) / hs**2,
        vega=(v(sigma=vol + hv) - v(sigma=vol - hv)) / (2 * hv),
        theta=-(v(t=tau + ht) - v(t=tau - ht)) / (2 * ht),
        vanna=(
            v(s=spot + hs, sigma=vol + hv)
            - v(s=spot + hs, sigma=vol - hv)
            - v(s=spot - hs, sigma=vol + hv)
            + v(s=spot - hs, sigma=vol - hv)
        )
        / (4 * hs * hv),
        volga=(v(sigma=vol + hv) - 2 * v() + v(sigma=vol - hv)) / hv**2,
    )
    d1 = (math.log(spot / strike) + (rate + vol**2 / 2) * tau) / stddev
    d2 = d1 - stddev
    # Each greek's natural size, so tiny greeks far from the money are judged absolutely.
    scale = dict(
        delta=1.0,
        gamma=1.0 / (spot * stddev),
        vega=spot * math.sqrt(tau),
        theta=spot * vol / math.sqrt(tau) + abs(rate) * strike,
        vanna=(1.0 + abs(d2)) / vol,
        volga=spot * math.sqrt(tau) * (1.0 + abs(d1 * d2)) / vol,
    )
    g = greeks(kind, spot, strike, tau, vol, rate)
    for name in GREEK_NAMES:
        exact = getattr(g, name)
        assert abs(fd[name] - exact) <= 1e-5 * (scale[name] + abs(exact)), name


# --- limits ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, spot, value, delta",
    [
        (1, 110.0, 10.0, 1.0),
        (1, 90.0, 0.0, 0.0),
        (1, 100.0, 0.0, 0.5),
        (-1, 90.0, 10.0, -1.0),
        (-1, 110.0, 0.0, 0.0),
        (-1, 100.0, 0.0, -0.5),
    ],
)
def test_expired_option_is_intrinsic(kind, spot, value, delta):
    g = greeks(kind, spot, 100.0, 0.0, 0.5, 0.05)
    assert price(kind, spot, 100.0, 0.0, 0.5, 0.05) == pytest.approx(value, abs=1e-12)
    assert g.delta == delta
    assert g.gamma == g.vega == g.theta == g.vanna == g.volga == 0.0


@pytest.mark.parametrize(
    "kind, spot, itm",
    [(1, 120.0, True), (1, 80.0, False), (-1, 80.0, True), (-1, 120.0, False)],
)
def test_zero_vol_is_discounted_intrinsic(kind, spot, itm):
    strike, tau, rate = 100.0, 2.0, 0.05
    disc_strike = strike * math.exp(-rate * tau)
    g = greeks(kind, spot, strike, tau, 0.0, rate)
    assert price(kind, spot, strike, tau, 0.0, rate) == pytest.approx(
        max(kind * (spot - disc_strike), 0.0), abs=1e-12
    )
    assert g.delta == (kind if itm else 0.0)
    # ITM call loses r K e^{-r tau} a year as the discount unwinds; an ITM put gains it.
    assert g.theta == pytest.approx(-kind * rate * disc_strike if itm else 0.0, abs=1e-12)
    h = 1e-6

    def intrinsic(t):
        return price(kind, spot, strike, t, 0.0, rate)

    assert g.theta == pytest.approx(-(intrinsic(tau + h) - intrinsic(tau - h)) / (2 * h), rel=1e-6)
    assert g.gamma == g.vega == g.vanna == g.volga == 0.0


def test_zero_vol_at_discounted_strike_has_half_delta():
    strike, tau, rate = 100.0, 1.0, 0.0
    assert greeks("C", 100.0, strike, tau, 0.0, rate).delta == 0.5
    assert greeks("P", 100.0, strike, tau, 0.0, rate).delta == -0.5


@pytest.mark.parametrize("kind", [1, -1])
def test_price_is_continuous_across_the_zero_variance_cutoff(kind):
    # At the money forward exactly: any rounding in ln(S/K) would be divided by ~1e-12.
    spot, strike, tau, rate = 100.0, 100.0, 1.0, 0.0
    below = price(kind, spot, strike, tau, 0.5e-12, rate)
    above = price(kind, spot, strike, tau, 2e-12, rate)
    assert below == pytest.approx(above, abs=1e-9)
    assert greeks(kind, spot, strike, tau, 2e-12, rate).delta == pytest.approx(0.5 * kind)


@pytest.mark.parametrize("vol, tau", [(1e3, 1.0), (1e6, 1.0), (1e300, 1e10)])
def test_huge_vol_limits(vol, tau):
    spot, strike, rate = 100.0, 90.0, 0.02
    assert price("C", spot, strike, tau, vol, rate) == pytest.approx(spot)
    assert price("P", spot, strike, tau, vol, rate) == pytest.approx(
        strike * math.exp(-rate * tau), rel=1e-12, abs=1e-300
    )
    c, p = greeks("C", spot, strike, tau, vol, rate), greeks("P", spot, strike, tau, vol, rate)
    assert (c.delta, p.delta) == (1.0, 0.0)
    assert all_finite(*c, *p)


@pytest.mark.parametrize(
    "spot, strike, call, put",
    [
        (1e9, 1e-6, 1e9 - 1e-6 * math.exp(-0.05), 0.0),
        (1e-6, 1e9, 0.0, 1e9 * math.exp(-0.05) - 1e-6),
    ],
)
def test_deep_itm_and_otm(spot, strike, call, put):
    args = (spot, strike, 1.0, 0.8, 0.05)
    assert price("C", *args) == pytest.approx(call, rel=1e-14, abs=1e-300)
    assert price("P", *args) == pytest.approx(put, rel=1e-14, abs=1e-300)
    c, p = greeks("C", *args), greeks("P", *args)
    assert c.delta == (1.0 if spot > strike else 0.0)
    assert c.gamma == c.vega == c.vanna == c.volga == 0.0
    assert all_finite(*c, *p)


def test_tiny_tau_near_the_money():
    spot = strike = 100.0
    tau, vol = 1e-20, 0.5
    stddev = vol * math.sqrt(tau)
    g = greeks("C", spot, strike, tau, vol, 0.05)
    assert price("C", spot, strike, tau, vol, 0.05) == pytest.approx(
        spot * stddev / math.sqrt(2 * math.pi), rel=1e-6
    )
    assert g.delta == pytest.approx(0.5, abs=1e-9)
    assert g.gamma == pytest.approx(1 / (math.sqrt(2 * math.pi) * spot * stddev), rel=1e-6)
    assert all_finite(*g)
    # Below the cutoff the option is worth its (here zero) intrinsic value.
    assert price("C", spot, strike, 1e-300, vol, 0.05) == 0.0


@settings(max_examples=1000, deadline=None)
@given(**extreme)
def test_no_nan_and_no_arbitrage_bounds_on_extreme_inputs(kind, spot, strike, tau, vol, rate):
    value = price(kind, spot, strike, tau, vol, rate)
    g = greeks(kind, spot, strike, tau, vol, rate)
    assert all_finite(value, *g)
    disc_strike = strike * math.exp(-rate * tau) if tau > 0 else strike
    tol = 1e-12 * (spot + disc_strike)
    assert max(kind * (spot - disc_strike), 0.0) - tol <= value
    assert value <= (spot if kind > 0 else disc_strike) + tol
    assert 0.0 <= kind * g.delta <= 1.0
    assert g.gamma >= 0.0 and g.vega >= 0.0


def test_no_nan_on_a_grid_of_extremes():
    axes = np.meshgrid(
        [1.0, -1.0],
        [1e-8, 1e-3, 1.0, 1e3, 1e9],
        [1e-8, 1e-3, 1.0, 1e3, 1e9],
        [0.0, 1e-300, 1e-24, 1e-12, 1e-3, 1.0, 100.0],
        [0.0, 1e-13, 1e-6, 0.5, 10.0, 1e4],
        [-1.0, 0.0, 1.0],
        indexing="ij",
    )
    assert np.isfinite(price(*axes)).all()
    assert all(np.isfinite(g).all() for g in greeks(*axes))


# --- the vectorised API ---------------------------------------------------------------------


def test_broadcasting_matches_scalar_calls():
    kind = np.array([[1], [-1]])
    spot = np.array([90.0, 100.0, 110.0])
    strike, tau, vol, rate = 100.0, np.array([0.25, 0.5, 1.0]), 0.6, 0.03
    values = price(kind, spot, strike, tau, vol, rate)
    g = greeks(kind, spot, strike, tau, vol, rate)
    assert values.shape == (2, 3)
    assert all(getattr(g, name).shape == (2, 3) for name in GREEK_NAMES)
    for i, j in np.ndindex(2, 3):
        args = (kind[i, 0], spot[j], strike, tau[j], vol, rate)
        assert values[i, j] == price(*args)
        assert tuple(x[i, j] for x in g) == tuple(greeks(*args))


def test_scalars_give_floats_and_empty_arrays_stay_empty():
    assert type(price(1, 100.0, 100.0, 1.0, 0.5)) is float
    g = greeks(np.float64(1.0), np.array(100.0), 100, 1, 0.5)
    assert all(type(x) is float for x in g)
    assert price(1, np.array([]), 100.0, 1.0, 0.5).shape == (0,)


def test_call_put_strings():
    args = (100.0, 95.0, 0.5, 0.7, 0.01)
    assert price("C", *args) == price("c", *args) == price(1, *args)
    assert price("P", *args) == price("p", *args) == price(-1.0, *args)
    both = price(np.array(["C", "p"]), *args)
    np.testing.assert_array_equal(both, [price(1, *args), price(-1, *args)])
    assert greeks(["c", "P"], *args).delta[1] == greeks(-1, *args).delta


@pytest.mark.parametrize(
    "kind, shown", [("X", "'X'"), (0, "0"), (2.0, "2.0"), (["C", "Q"], "'Q'"), (None, "None")]
)
def test_bad_kind_raises_naming_the_value(kind, shown):
    with pytest.raises(ValueError, match=f"kind .*{shown}"):
        price(kind, 100.0, 100.0, 1.0, 0.5)


@pytest.mark.parametrize(
    "name, args",
    [
        ("spot", (0.0, 100.0, 1.0, 0.5, 0.0)),
        ("strike", (100.0, -1.0, 1.0, 0.5, 0.0)),
        ("tau", (100.0, 100.0, -0.1, 0.5, 0.0)),
        ("vol", (100.0, 100.0, 1.0, [0.5, -0.2], 0.0)),
        ("vol", (100.0, 100.0, 1.0, math.nan, 0.0)),
        ("rate", (100.0, 100.0, 1.0, 0.5, math.inf)),
        ("spot", ("abc", 100.0, 1.0, 0.5, 0.0)),
    ],
)
def test_bad_inputs_raise(name, args):
    with pytest.raises(ValueError, match=f"^{name} must be "):
        greeks(1, *args)


# --- the kernel's shared valuation ----------------------------------------------------------


@pytest.mark.parametrize("snap", [-1, 0], ids=["atm-and-smile", "surface"])
def test_call_and_put_at_one_strike_share_their_terms_exactly(snap):
    """While both kinds at a strike are held, the kernel values the second from the first one's
    vol, d1, d2, tails and kind-free greeks: every number equals a valuation of that series
    alone, in either order, and equals the closed form at the series' vol."""
    from backtest.kernel.loop import new_book, new_terms
    from backtest.kernel.types import Impact, MarketPath, PricingParams, SeriesSpec, SurfaceGrid
    from backtest.kernel.valuation import NS_PER_YEAR, valued

    week = 7 * 86_400 * 10**9
    mk = MarketPath(
        np.array([0], np.int64),
        *(np.array([v]) for v in (2000.0, 0.6, 0.03, 0.0)),
        np.array([snap]),
        np.zeros(0),
        np.zeros(0),
        np.zeros(0),
        np.zeros(0, np.int64),
    )
    ser = SeriesSpec(
        np.array([week, week, week]),
        np.array([2100.0, 2100.0, 1900.0]),
        np.array([1.0, -1.0, -1.0]),
        np.zeros(3, np.int64),
        np.array([0, 0, 1]),
    )
    ks = np.array([-0.2, 0.0, 0.2])
    smile = 0.55 + 0.3 * ks**2
    surf = SurfaceGrid(np.array([0.01, 0.1]), ks, np.stack([smile, smile + 0.05])[None])
    pricing = PricingParams(*([0.0] * 14))._replace(skew_slope=-0.2, smile_curvature=0.5)
    impact = Impact(np.array([0.01]), np.zeros(2), np.array([0.01]), np.array([0.05, -0.02]))
    fields = ("price", "delta", "gamma", "vega", "theta", "vanna", "volga", "sigma")

    def value(order, held):
        book, terms = new_book(ser), new_terms(1, 2)
        book.qty[:] = held  # a series shares its strike's terms while the other kind is held
        for i in order:
            valued(i, 0, mk, ser, surf, impact, terms, book, pricing)
        return {f: getattr(book, f).copy() for f in fields}

    assert list(new_book(ser).sibling) == [1, 0, -1]
    put_first, call_first = value([1, 0, 2], -1.0), value([0, 1, 2], -1.0)
    for i in range(3):
        alone = value([i], 0.0)
        for f in fields:
            assert put_first[f][i] == call_first[f][i] == alone[f][i], (i, f)
    tau = week / NS_PER_YEAR
    assert put_first["sigma"][0] == put_first["sigma"][1] != put_first["sigma"][2]
    for i in range(3):
        expected = bs.bs_greeks(
            ser.kind[i], 2000.0, ser.strike[i], tau, put_first["sigma"][i], 0.03
        )
        assert [put_first[f][i] for f in fields[:-1]] == list(expected)
