"""The synthetic flow generator: reproducible, calibrated to its `[flow]` keys, and causal."""

import math

import numpy as np
import polars as pl
import pytest

from backtest.config import FlowConfig
from backtest.inputs.synthetic_flow import (
    NS_PER_DAY,
    NS_PER_HOUR,
    SYNTHETIC_FLOW_SCHEMA,
    generate_flow,
    listed_expiries,
)

START = int(np.datetime64("2024-01-01T00:00", "ns").astype(np.int64))
MINUTE = 60 * 10**9


def market(days=60, step_minutes=60, vol=0.6, iv=0.6, seed=0):
    """A GBM path on a regular grid; `vol` and `iv` may be arrays (per interval / per tick)."""
    n = round(days * 1440 / step_minutes) + 1
    ts = START + np.arange(n, dtype=np.int64) * step_minutes * MINUTE
    dt = step_minutes / (365 * 1440)
    vol = np.broadcast_to(np.asarray(vol, dtype=float), (n - 1,))
    noise = np.random.default_rng(seed).standard_normal(n - 1)
    log_returns = -0.5 * vol**2 * dt + vol * math.sqrt(dt) * noise
    spot = 1000.0 * np.exp(np.concatenate(([0.0], np.cumsum(log_returns))))
    return ts, spot, np.broadcast_to(np.asarray(iv, dtype=float), (n,)).copy()


def flow_cfg(**changes):
    keys = {
        "seed": 7,
        "trades_per_day": 40.0,
        "iv_intensity": 0.0,
        "buy_fraction": 0.65,
        "call_fraction": 0.55,
        "size_median": 5.0,
        "size_sigma": 1.0,
        "expiries": ["daily", "weekly", "monthly"],
        "max_tenor_days": 60,
        "strike_step": 1.0,
        "moneyness_sd": 0.08,
        "informed_fraction": 0.0,
        "informed_horizon": 24,
    }
    return FlowConfig(**(keys | changes))


def ns(column: pl.Series) -> np.ndarray:
    return column.dt.epoch("ns").to_numpy()


def within_sigmas(observed, expected, sigma, k=4.0):
    return abs(observed - expected) <= k * sigma


def test_same_seed_same_frame_and_other_seed_differs():
    ts, spot, iv = market(days=20)
    first = generate_flow(ts, spot, iv, flow_cfg(informed_fraction=0.3))
    again = generate_flow(ts, spot, iv, flow_cfg(informed_fraction=0.3))
    other = generate_flow(ts, spot, iv, flow_cfg(informed_fraction=0.3, seed=8))
    assert first.height > 0
    assert first.equals(again)
    assert not first.equals(other)


def test_schema_sorted_and_inside_the_market():
    ts, spot, iv = market(days=20)
    flow = generate_flow(ts, spot, iv, flow_cfg())
    assert dict(flow.schema) == SYNTHETIC_FLOW_SCHEMA
    assert flow["ts"].is_sorted()
    t = ns(flow["ts"])
    assert t.min() >= ts[0] and t.max() < ts[-1]
    assert set(flow["side"].unique()) <= {-1, 1}
    assert (flow["size"] > 0).all()


@pytest.mark.parametrize("trades_per_day", [10.0, 200.0])
def test_count_follows_trades_per_day_on_uneven_ticks(trades_per_day):
    gaps = np.random.default_rng(1).integers(1, 180, 3000) * MINUTE
    ts = START + np.concatenate(([0], np.cumsum(gaps)))
    spot, iv = np.full(ts.size, 1000.0), np.full(ts.size, 0.6)
    flow = generate_flow(ts, spot, iv, flow_cfg(trades_per_day=trades_per_day))
    expected = trades_per_day * (ts[-1] - ts[0]) / NS_PER_DAY
    assert within_sigmas(flow.height, expected, math.sqrt(expected))
    # Arrival times are uniform inside each market interval.
    t = ns(flow["ts"])
    tick = np.searchsorted(ts, t, side="right") - 1
    first_half = ((t - ts[tick]) / (ts[tick + 1] - ts[tick]) < 0.5).mean()
    assert within_sigmas(first_half, 0.5, math.sqrt(0.25 / flow.height))


@pytest.mark.parametrize("iv_intensity", [0.0, 1.0, 2.0])
def test_iv_intensity_moves_arrivals_to_high_iv(iv_intensity):
    days = 200
    iv = np.where((np.arange(days * 24 + 1) // 24) % 2 == 0, 0.4, 0.8)  # alternate days
    ts, spot, iv = market(days=days, iv=iv)
    flow = generate_flow(ts, spot, iv, flow_cfg(trades_per_day=50.0, iv_intensity=iv_intensity))
    tick = np.searchsorted(ts, ns(flow["ts"]), side="right") - 1
    high, low = (iv[tick] == 0.8).sum(), (iv[tick] == 0.4).sum()
    assert high / low == pytest.approx(2.0**iv_intensity, rel=0.1)
    running_mean = np.cumsum(iv[:-1]) / np.arange(1, iv.size)
    expected = (50.0 / 24 * (iv[:-1] / running_mean) ** iv_intensity).sum()
    assert within_sigmas(flow.height, expected, math.sqrt(expected))


def test_listed_expiries_follow_deribit_calendar():
    start = int(np.datetime64("2026-08-01T08:00", "ns").astype(np.int64))
    end = int(np.datetime64("2026-08-31T23:59", "ns").astype(np.int64))

    def dates(kinds, lo=start):
        listed = listed_expiries(lo, end, kinds).astype("datetime64[ns]")
        return [str(d) for d in listed.astype("datetime64[m]")]

    fridays = [f"2026-08-{d:02d}T08:00" for d in (7, 14, 21, 28)]
    assert dates(["weekly"]) == fridays
    assert dates(["monthly"]) == ["2026-08-28T08:00"]
    assert dates(["daily"]) == [f"2026-08-{d:02d}T08:00" for d in range(1, 32)]
    assert dates(["daily", "weekly", "monthly"]) == dates(["daily"])  # no duplicates
    assert dates(["daily"], lo=start + 1)[0] == "2026-08-02T08:00"  # bounds are inclusive


@pytest.mark.parametrize(
    ("kinds", "max_tenor_days"),
    [(["daily"], 60), (["weekly"], 3), (["monthly"], 60), (["daily", "weekly", "monthly"], 45)],
)
def test_expiries_listed_after_an_hour_and_within_tenor(kinds, max_tenor_days):
    ts, spot, iv = market(days=120)
    flow = generate_flow(
        ts, spot, iv, flow_cfg(expiries=kinds, max_tenor_days=max_tenor_days, trades_per_day=20.0)
    )
    assert flow.height > 0
    expiry = flow["expiry"]
    assert (expiry.dt.hour() == 8).all()
    assert (expiry.dt.truncate("1h") == expiry).all()
    if "daily" not in kinds:
        assert (expiry.dt.weekday() == 5).all()  # Friday
    if kinds == ["monthly"]:
        assert (expiry.dt.offset_by("7d").dt.month() != expiry.dt.month()).all()
    wait = ns(expiry) - ns(flow["ts"])
    assert (wait > NS_PER_HOUR).all()
    assert (wait <= max_tenor_days * NS_PER_DAY).all()
    if kinds == ["weekly"]:  # trades with no Friday within 3 days are dropped
        expected = 20.0 * 120
        assert flow.height < expected - 4 * math.sqrt(expected)


def test_expiry_is_uniform_over_distinct_dates():
    ts, spot, iv = market(days=200)
    flow = generate_flow(ts, spot, iv, flow_cfg(max_tenor_days=56))
    friday_share = (flow["expiry"].dt.weekday() == 5).mean()
    assert within_sigmas(friday_share, 1 / 7, math.sqrt(1 / 7 * 6 / 7 / flow.height))


def test_strikes_on_grid_and_at_least_one_step():
    ts, spot, iv = market(days=30)
    strikes = generate_flow(ts, spot, iv, flow_cfg(strike_step=25.0))["strike"].to_numpy()
    assert np.array_equal(strikes / 25.0, np.rint(strikes / 25.0))
    wide = generate_flow(ts, spot, iv, flow_cfg(strike_step=5000.0))
    assert (wide["strike"] == 5000.0).all()


@pytest.mark.parametrize("rate", [0.0, 0.5])
def test_log_moneyness_around_forward_scales_with_sqrt_tenor(rate):
    ts, spot, iv = market(days=200)
    flow = generate_flow(ts, spot, iv, flow_cfg(strike_step=0.01, moneyness_sd=0.1), rate=rate)
    tick = np.searchsorted(ts, ns(flow["ts"]), side="right") - 1
    tau = (ns(flow["expiry"]) - ns(flow["ts"])) / (365 * NS_PER_DAY)
    x = np.log(flow["strike"].to_numpy() / spot[tick]) - rate * tau
    standard = x / (0.1 * np.sqrt(np.maximum(tau, 1 / 365) / (30 / 365)))
    assert abs(standard.mean()) < 4 / math.sqrt(flow.height)
    assert standard.std() == pytest.approx(1.0, abs=0.05)
    assert x[tau < 2 / 365].std() < 0.4 * x[tau > 20 / 365].std()


def test_buy_call_fractions_and_lognormal_sizes():
    ts, spot, iv = market(days=100)
    flow = generate_flow(ts, spot, iv, flow_cfg(size_median=5.0, size_sigma=0.7))
    n = flow.height
    buys, calls = (flow["side"] == 1).mean(), (flow["kind"] == "C").mean()
    assert within_sigmas(buys, 0.65, math.sqrt(0.65 * 0.35 / n))
    assert within_sigmas(calls, 0.55, math.sqrt(0.55 * 0.45 / n))
    log_size = np.log(flow["size"].to_numpy())
    assert within_sigmas(np.median(log_size), math.log(5.0), 1.3 * 0.7 / math.sqrt(n))
    assert log_size.std() == pytest.approx(0.7, rel=0.05)
    one_sided = generate_flow(ts, spot, iv, flow_cfg(buy_fraction=1.0, call_fraction=0.0))
    assert (one_sided["side"] == 1).all() and (one_sided["kind"] == "P").all()


def test_informed_traders_buy_before_high_realised_vol_and_sell_before_low():
    block_days, days, step = 5, 40, 10
    n = days * 1440 // step
    block = (np.arange(n) * step // 1440) // block_days
    ts, spot, iv = market(days=days, step_minutes=step, vol=np.where(block % 2, 1.0, 0.2), iv=0.5)
    # A last tick two days later: trades in that gap see fewer than two ticks ahead.
    ts = np.append(ts, ts[-1] + 2 * NS_PER_DAY)
    spot, iv = np.append(spot, spot[-1]), np.append(iv, 0.5)
    flow = generate_flow(ts, spot, iv, flow_cfg(informed_fraction=1.0, trades_per_day=50.0))
    t = ns(flow["ts"])
    since = t - START
    trade_block = since // (block_days * NS_PER_DAY)
    inside = (since + 24 * NS_PER_HOUR) // (block_days * NS_PER_DAY) == trade_block
    inside &= t + 24 * NS_PER_HOUR < ts[-2]
    side = flow["side"].to_numpy()
    assert inside.sum() > 500
    assert (side[inside & (trade_block % 2 == 1)] == 1).all()
    assert (side[inside & (trade_block % 2 == 0)] == -1).all()
    informed = flow["informed"].to_numpy()
    assert informed[t < ts[-3]].all()
    assert (t >= ts[-2]).sum() > 0 and not informed[t >= ts[-2]].any()

    mixed = generate_flow(ts, spot, iv, flow_cfg(informed_fraction=0.3))
    share = mixed.filter(pl.Series(ns(mixed["ts"]) < ts[-3]))["informed"]
    assert within_sigmas(share.mean(), 0.3, math.sqrt(0.3 * 0.7 / share.len()))


def test_noise_flow_ignores_data_after_t():
    ts, spot, _ = market(days=60, step_minutes=30)
    rng = np.random.default_rng(5)
    iv = 0.6 * np.exp(np.cumsum(rng.normal(0, 0.01, ts.size)))
    cut = ts.size // 2
    other_spot, other_iv = spot.copy(), iv.copy()
    other_spot[cut + 1 :] = spot[cut] * np.exp(np.cumsum(rng.normal(0, 0.01, ts.size - cut - 1)))
    other_iv[cut + 1 :] = 2.0 * iv[cut + 1 :][::-1]  # any other iv path after T
    cfg = flow_cfg(iv_intensity=2.0, informed_fraction=0.3, trades_per_day=100.0)
    before, after = [], []
    for s, v in ((spot, iv), (other_spot, other_iv)):
        flow = generate_flow(ts, s, v, cfg)
        early = pl.Series(ns(flow["ts"]) < ts[cut])
        before.append(flow.filter(early & ~flow["informed"]))
        after.append(flow.filter(~early))
    assert before[0].height > 1000
    assert before[0].equals(before[1])
    assert not after[0].equals(after[1])


def test_a_year_of_minutes_with_100k_trades():
    ts, spot, iv = market(days=365, step_minutes=1)
    flow = generate_flow(ts, spot, iv, flow_cfg(trades_per_day=100_000 / 365))
    assert within_sigmas(flow.height, 100_000, math.sqrt(100_000))
    assert flow["ts"].is_sorted()
