"""LP deposits (+) and withdrawal requests (-) in quote currency, from a Parquet of (ts, amount)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from backtest.errors import InputError
from backtest.inputs.checks import as_float, as_utc_ns, first_bad, read_parquet, require_columns
from backtest.inputs.market import Market


def validate_lp_flows(df: pl.DataFrame, source: Path | str) -> pl.DataFrame:
    require_columns(df, source, ("ts", "amount"))
    frame = pl.DataFrame(
        {"ts": as_utc_ns(df, source, "ts"), "amount": as_float(df, source, "amount", False)}
    )
    row = first_bad(frame, pl.col("amount") == 0.0)
    if row is not None:
        raise InputError.at(source, "amount", row, "must be non-zero (+ deposit, - withdrawal)")
    return frame.sort("ts", maintain_order=True)


def load_lp_flows(path: str | Path) -> pl.DataFrame:
    return validate_lp_flows(read_parquet(Path(path)), Path(path))


def no_lp_flows() -> pl.DataFrame:
    return pl.DataFrame(
        {"ts": pl.Series([], dtype=pl.Int64), "amount": pl.Series([], dtype=pl.Float64)}
    )


def align_lp_flows(flows: pl.DataFrame, market: Market) -> tuple[np.ndarray, np.ndarray]:
    """Per path, the tick each LP row lands on: the latest at or before it (-1 before the first
    tick; rows after the last tick land on it). Returns (ticks[n_paths, n_rows], amounts)."""
    times = flows["ts"].to_numpy().astype(np.int64)
    ticks = np.empty((market.n_paths, len(times)), np.int64)
    for k in range(market.n_paths):
        ticks[k] = np.searchsorted(market.ts[market.path(k)], times, side="right") - 1
    return ticks, flows["amount"].to_numpy().astype(np.float64)
