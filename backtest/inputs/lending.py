"""The money market's borrow demand per tick, for lent collateral ([lending], docs/design.md).

The demand is a utilisation in [0, 1] of the market without the pool (its other suppliers'
market_usd); the kernel adds the pool's own supply. Either a Parquet of (ts, utilisation),
each tick taking the latest row at or before it, or "process": a seeded mean-reverting process
in logit space, one draw stream per path (`streams.UTILISATION`). Either may have a scripted
squeeze: the whole market's utilisation, the pool's supply included, pinned at
squeeze_utilisation for squeeze_days from squeeze_start.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl

from backtest.config import LendingConfig, parse_time
from backtest.errors import InputError
from backtest.inputs import streams
from backtest.inputs.checks import (
    as_float,
    as_utc_ns,
    check_increasing,
    first_bad,
    read_parquet,
    require_columns,
)
from backtest.inputs.market import Market

NS_PER_DAY = 86_400 * 1_000_000_000
PROCESS = "process"


def validate_utilisation(df: pl.DataFrame, source: Path | str) -> pl.DataFrame:
    require_columns(df, source, ("ts", "utilisation"))
    frame = pl.DataFrame(
        {
            "ts": as_utc_ns(df, source, "ts"),
            "utilisation": as_float(df, source, "utilisation", positive=False),
        }
    )
    u = pl.col("utilisation")
    row = first_bad(frame, (u < 0.0) | (u > 1.0))
    if row is not None:
        value = frame["utilisation"][row]
        raise InputError.at(source, "utilisation", row, f"must be in [0, 1], found {value}")
    check_increasing(frame["ts"], pl.Series([0] * frame.height), source)
    if frame.height == 0:
        raise InputError.at(source, "utilisation", None, "no rows")
    return frame


def load_utilisation(path: str | Path) -> pl.DataFrame:
    return validate_utilisation(read_parquet(Path(path)), Path(path))


def check_covers(frame: pl.DataFrame, market: Market, source: Path | str) -> None:
    """Every path's first tick has a row at or before it (no tick is left without a value)."""
    first = int(frame["ts"][0])
    for k in range(market.n_paths):
        start = int(market.ts[market.path(k)][0])
        if start < first:
            when = pl.Series([start]).cast(pl.Datetime("ns", "UTC"))[0]
            raise InputError.at(
                source, "ts", 0, f"first row is after the market's first tick {when}"
            )


def aligned(frame: pl.DataFrame, market: Market) -> np.ndarray:
    """Each tick's utilisation: the latest row at or before it (check_covers has run)."""
    times = frame["ts"].to_numpy().astype(np.int64)
    values = frame["utilisation"].to_numpy().astype(np.float64)
    at = np.searchsorted(times, market.ts, side="right") - 1
    return values[np.maximum(at, 0)]


def process(ts: np.ndarray, cfg: LendingConfig, seed: int, path_id: int) -> np.ndarray:
    """One path's utilisation: x = logit(u) reverts to logit(util_mean) at util_reversion per
    day with util_vol per sqrt(day) (Ornstein-Uhlenbeck, sampled exactly on the ticks), from
    x = logit(util_mean) at the first tick."""
    rng = streams.path_rng(seed, path_id, streams.UTILISATION)
    n = len(ts)
    z = rng.standard_normal(n)
    mean = math.log(cfg.util_mean / (1.0 - cfg.util_mean))
    days = np.diff(ts) / NS_PER_DAY
    kappa, sigma = cfg.util_reversion, cfg.util_vol
    decay = np.exp(-kappa * days)
    if kappa > 0.0:
        sd = sigma * np.sqrt((1.0 - decay**2) / (2.0 * kappa))
    else:
        sd = sigma * np.sqrt(days)
    x = np.empty(n)
    x[0] = mean
    for k in range(1, n):
        x[k] = mean + (x[k - 1] - mean) * decay[k - 1] + sd[k - 1] * z[k]
    return 1.0 / (1.0 + np.exp(-x))


def squeeze_pin(ts: np.ndarray, cfg: LendingConfig) -> np.ndarray:
    """Per tick, the utilisation a squeeze pins the whole market at, or NaN outside one."""
    pin = np.full(len(ts), np.nan)
    if cfg.squeeze_start is not None and cfg.squeeze_days > 0.0:
        start = parse_time(cfg.squeeze_start)
        begin = int(start.timestamp()) * 1_000_000_000 + start.microsecond * 1_000
        end = begin + int(cfg.squeeze_days * NS_PER_DAY)
        pin[(ts >= begin) & (ts < end)] = cfg.squeeze_utilisation
    return pin


def utilisation_for(
    cfg: LendingConfig, market: Market, frame: pl.DataFrame | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(borrow demand, squeeze pin) at every tick of the market's paths, back to back; both
    empty while lending is off (the kernel then never reads them)."""
    if cfg.share == 0.0:
        return np.zeros(0), np.zeros(0)
    if frame is not None:
        demand = aligned(frame, market)
    else:
        demand = np.concatenate(
            [
                process(market.ts[market.path(k)], cfg, seed, int(pid))
                for k, pid in enumerate(market.path_ids)
            ]
        )
    return demand, squeeze_pin(market.ts, cfg)
