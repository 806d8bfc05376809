"""Seeded synthetic option order flow for one market path: the `flow = "synthetic"` generator.

Every trade is drawn so that it depends only on the market up to its own arrival (informed traders
aside, whose whole point is to peek ahead): arrivals come from a time-changed unit-rate Poisson
process, and trade k takes the k-th draw of its own random stream per attribute, so data after T
can neither move an earlier arrival nor shift the random numbers an earlier trade sees.
`cfg` is the strategy's validated `[flow]` section, so ranges are checked once, in config.py.
"""

import math
from collections.abc import Sequence

import numpy as np
import polars as pl

from backtest.config import FlowConfig
from backtest.errors import InputError
from backtest.inputs.flow import FLOW_SCHEMA

NS_PER_HOUR = 3_600 * 10**9
NS_PER_DAY = 24 * NS_PER_HOUR
NS_PER_YEAR = 365 * NS_PER_DAY
EXPIRY_HOUR = 8  # Deribit lists and settles at 08:00 UTC
MIN_TIME_TO_EXPIRY_NS = NS_PER_HOUR
# Log-moneyness sd is moneyness_sd at this tenor and scales with sqrt(tenor), so strikes sit at
# comparable distances in standard deviations of the forward; the floor keeps same-day expiries
# from collapsing onto the at-the-money strike.
STRIKE_REFERENCE_TENOR = 30 / 365
STRIKE_MIN_TENOR = 1 / 365

SYNTHETIC_FLOW_SCHEMA = FLOW_SCHEMA | {"informed": pl.Boolean}


def listed_expiries(start_ns: int, end_ns: int, kinds: Sequence[str]) -> np.ndarray:
    """Expiries listed in [start_ns, end_ns] on Deribit's calendar, as sorted unique UTC ns.

    Dailies every day, weeklies every Friday, monthlies the last Friday of the month, all at
    08:00 UTC; a date listed by several kinds appears once, so picks among them stay uniform.
    """
    days = np.arange(
        np.datetime64(int(start_ns), "ns").astype("datetime64[D]"),
        np.datetime64(int(end_ns), "ns").astype("datetime64[D]") + 1,
    )
    friday = (days.astype(np.int64) + 3) % 7 == 4  # 1970-01-01 was a Thursday (Monday = 0)
    last_of_month = (days + 7).astype("datetime64[M]") != days.astype("datetime64[M]")
    masks = {"daily": np.ones(days.size, bool), "weekly": friday, "monthly": friday & last_of_month}
    listed = np.zeros(days.size, bool)
    for kind in kinds:
        listed |= masks[kind]
    expiry = days[listed].astype("datetime64[ns]").astype(np.int64) + EXPIRY_HOUR * NS_PER_HOUR
    return expiry[(expiry >= start_ns) & (expiry <= end_ns)]


def _arrivals(
    ts: np.ndarray,
    iv: np.ndarray,
    trades_per_day: float,
    iv_intensity: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Arrival times (ns, whole µs) and the index of the tick each one trades at.

    The k-th point of a unit-rate Poisson process is mapped through the inverse of the integrated
    intensity, which is piecewise constant on [ts[i], ts[i+1]): trades_per_day × (iv[i] /
    running mean of iv[0..i]) ** iv_intensity. This is the inhomogeneous Poisson process with
    uniform times within each interval; the reference is a running mean, not a whole-path
    statistic, so the integral up to t never reads data after t.
    """
    dt = np.diff(ts)
    reference = np.cumsum(iv[:-1]) / np.arange(1, iv.size)
    intensity = trades_per_day * (dt / NS_PER_DAY) * (iv[:-1] / reference) ** iv_intensity
    if not np.isfinite(intensity).all():
        raise InputError.at(
            "[flow]", "iv_intensity", None, "gives a non-finite arrival rate on this market"
        )
    integrated = np.concatenate(([0.0], np.cumsum(intensity)))
    total = integrated[-1]
    chunk = int(total + 6.0 * math.sqrt(total)) + 16
    gaps = rng.standard_exponential(chunk)
    while (points := np.cumsum(gaps))[-1] < total:  # a draw past six sigma: extend the stream
        gaps = np.concatenate((gaps, rng.standard_exponential(chunk)))
    points = points[points < total]
    tick = np.searchsorted(integrated, points, side="right") - 1
    within = (points - integrated[tick]) / intensity[tick]
    offset = np.minimum((within * dt[tick]).astype(np.int64), dt[tick] - 1)
    return (ts[tick] + offset) // 1_000 * 1_000, tick


def _realised_vol(ts: np.ndarray, spot: np.ndarray, t: np.ndarray, horizon_ns: int) -> np.ndarray:
    """Annualised realised vol of the ticks in (t, t + horizon]; NaN with fewer than two ticks."""
    squared = np.concatenate(([0.0], np.cumsum(np.diff(np.log(spot)) ** 2)))
    first = np.searchsorted(ts, t, side="right")
    last = np.searchsorted(ts, t + horizon_ns, side="right") - 1
    enough = last > first
    first, last = np.where(enough, first, 0), np.where(enough, last, 1)
    years = (ts[last] - ts[first]) / NS_PER_YEAR
    return np.where(enough, np.sqrt((squared[last] - squared[first]) / years), np.nan)


def generate_flow(
    ts: np.ndarray, spot: np.ndarray, iv: np.ndarray, cfg: FlowConfig, rate: float = 0.0
) -> pl.DataFrame:
    """Synthetic flow for one market path, sorted by ts.

    `ts` are UTC nanoseconds on whole microseconds (as the market loader delivers them), so each
    trade's µs timestamp stays inside the market interval whose spot and iv it used.

    Same inputs and `cfg.seed` give an identical frame. Trades with no listed expiry between
    1 hour and max_tenor_days ahead are dropped.
    """
    ts = np.asarray(ts, dtype=np.int64)
    spot = np.asarray(spot, dtype=np.float64)
    iv = np.asarray(iv, dtype=np.float64)
    if ts.ndim != 1 or ts.size < 2 or spot.shape != ts.shape or iv.shape != ts.shape:
        raise ValueError("ts, spot and iv must be 1-D arrays of the same length, at least 2")
    if not (np.diff(ts) > 0).all():
        raise ValueError("ts must be strictly increasing")

    rngs = np.random.default_rng(cfg.seed).spawn(7)
    arrival_rng, pick_rng, call_rng, buy_rng, informed_rng, moneyness_rng, size_rng = rngs
    t, tick = _arrivals(ts, iv, cfg.trades_per_day, cfg.iv_intensity, arrival_rng)

    tenor_ns = round(cfg.max_tenor_days * NS_PER_DAY)
    listed = listed_expiries(ts[0], ts[-1] + tenor_ns, cfg.expiries)
    first = np.searchsorted(listed, t + MIN_TIME_TO_EXPIRY_NS, side="right")
    count = np.searchsorted(listed, t + tenor_ns, side="right") - first
    keep = count > 0  # depends on t and the calendar only, so the kept trades stay causal
    t, tick, first, count = t[keep], tick[keep], first[keep], count[keep]

    # Kept trade k takes the k-th draw of every stream, however many trades follow it.
    n = t.size
    expiry = listed[first + (pick_rng.random(n) * count).astype(np.int64)]
    tau = (expiry - t) / NS_PER_YEAR
    sd = cfg.moneyness_sd * np.sqrt(np.maximum(tau, STRIKE_MIN_TENOR) / STRIKE_REFERENCE_TENOR)
    forward = spot[tick] * np.exp(rate * tau)
    grid = forward * np.exp(sd * moneyness_rng.standard_normal(n)) / cfg.strike_step
    strike = np.maximum(np.rint(grid), 1.0) * cfg.strike_step

    rv = _realised_vol(ts, spot, t, round(cfg.informed_horizon * NS_PER_HOUR))
    informed = (informed_rng.random(n) < cfg.informed_fraction) & ~np.isnan(rv)
    noise_side = np.where(buy_rng.random(n) < cfg.buy_fraction, 1, -1)
    side = np.where(informed, np.where(rv > iv[tick], 1, -1), noise_side)

    return pl.DataFrame(
        {
            "ts": t // 1_000,
            "expiry": expiry // 1_000,
            "strike": strike,
            "kind": np.where(call_rng.random(n) < cfg.call_fraction, "C", "P"),
            "side": side,
            "size": cfg.size_median * np.exp(cfg.size_sigma * size_rng.standard_normal(n)),
            "informed": informed,
        },
        schema=SYNTHETIC_FLOW_SCHEMA,
    )
