"""Implied-vol surface snapshots: a rectangular (tenor x log-moneyness) grid per timestamp."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from backtest.errors import InputError
from backtest.inputs.checks import as_float, as_utc_ns, first_bad, read_parquet, require_columns

SURFACE_COLUMNS = ("ts", "tenor_days", "log_moneyness", "iv")


@dataclass(frozen=True)
class Surface:
    ts: np.ndarray  # int64 ns, one per snapshot, increasing
    tenors: np.ndarray  # years, increasing
    log_moneyness: np.ndarray  # ln(K/F), increasing
    vols: np.ndarray  # (n_snapshots, n_tenors, n_moneyness)

    def snapshot_at(self, ticks: np.ndarray) -> np.ndarray:
        """Index of the latest snapshot at or before each tick (-1 before the first): a tick
        never sees a surface published after it."""
        return (np.searchsorted(self.ts, ticks, side="right") - 1).astype(np.int64)


def no_surface() -> Surface:
    return Surface(
        ts=np.zeros(0, np.int64),
        tenors=np.zeros(1),
        log_moneyness=np.zeros(1),
        vols=np.zeros((0, 1, 1)),
    )


def load_surface(path: str | Path) -> Surface:
    path = Path(path)
    df = read_parquet(path)
    require_columns(df, path, SURFACE_COLUMNS)
    frame = pl.DataFrame(
        {
            "ts": as_utc_ns(df, path, "ts"),
            "tenor_days": as_float(df, path, "tenor_days", positive=True),
            "log_moneyness": as_float(df, path, "log_moneyness", positive=False),
            "iv": as_float(df, path, "iv", positive=True),
        }
    ).with_row_index("row")
    tenors = np.unique(frame["tenor_days"].to_numpy())
    ks = np.unique(frame["log_moneyness"].to_numpy())
    snapshots = np.unique(frame["ts"].to_numpy())
    dup = first_bad(frame, pl.struct("ts", "tenor_days", "log_moneyness").is_duplicated())
    if dup is not None:
        raise InputError.at(path, "log_moneyness", dup, "duplicate grid point for this ts/tenor")
    counts = (
        frame.group_by("ts")
        .agg(pl.len(), pl.col("row").min())
        .filter(pl.col("len") != len(tenors) * len(ks))
    )
    if counts.height:
        row = int(counts["row"].min())
        raise InputError.at(
            path,
            "ts",
            row,
            f"snapshot is not the full grid of {len(tenors)} tenors x {len(ks)} moneyness points",
        )
    ordered = frame.sort("ts", "tenor_days", "log_moneyness")
    vols = ordered["iv"].to_numpy().reshape(len(snapshots), len(tenors), len(ks))
    return Surface(
        ts=snapshots.astype(np.int64),
        tenors=tenors / 365.0,
        log_moneyness=ks.astype(np.float64),
        vols=np.ascontiguousarray(vols, dtype=np.float64),
    )
