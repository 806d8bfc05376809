"""Market data: validated, windowed, one contiguous block of ticks per path."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from backtest.errors import InputError
from backtest.inputs.checks import (
    as_float,
    as_int,
    as_utc_ns,
    check_increasing,
    parquet_files,
    read_parquet,
    require_columns,
)

MARKET_COLUMNS = ("ts", "spot", "iv")


@dataclass(frozen=True)
class Market:
    """Ticks of every path, concatenated; path k is rows offsets[k]:offsets[k+1]."""

    ts: np.ndarray  # int64 UTC ns
    spot: np.ndarray
    iv: np.ndarray
    rate: np.ndarray
    funding: np.ndarray
    path_ids: np.ndarray  # int64, one per path
    offsets: np.ndarray  # int64, n_paths + 1
    multi_path: bool = False  # from a multi-path file (stays True for a subset of its paths)

    @property
    def n_paths(self) -> int:
        return len(self.path_ids)

    def path(self, k: int) -> slice:
        return slice(int(self.offsets[k]), int(self.offsets[k + 1]))

    def subset(self, first: int, last: int) -> Market:
        """Paths first..last-1, sharing memory with this market."""
        rows = slice(int(self.offsets[first]), int(self.offsets[last]))
        return Market(
            ts=self.ts[rows],
            spot=self.spot[rows],
            iv=self.iv[rows],
            rate=self.rate[rows],
            funding=self.funding[rows],
            path_ids=self.path_ids[first:last],
            offsets=self.offsets[first : last + 1] - self.offsets[first],
            multi_path=self.multi_path,
        )

    def frame(self) -> pl.DataFrame:
        path_of_row = np.repeat(self.path_ids, np.diff(self.offsets))
        return pl.DataFrame(
            {
                "path_id": path_of_row,
                "ts": pl.Series(self.ts).cast(pl.Datetime("ns", "UTC")),
                "spot": self.spot,
                "iv": self.iv,
                "rate": self.rate,
                "funding": self.funding,
            }
        )


def validate_market(df: pl.DataFrame, path: Path | str, default_rate: float) -> pl.DataFrame:
    """The canonical market frame: path_id, ts as UTC ns, spot, iv, rate, funding."""
    require_columns(df, path, MARKET_COLUMNS)
    n = df.height
    path_id = as_int(df, path, "path_id") if "path_id" in df.columns else pl.Series([0] * n)
    out = pl.DataFrame(
        {
            "path_id": path_id.cast(pl.Int64),
            "ts": as_utc_ns(df, path, "ts"),
            "spot": as_float(df, path, "spot", positive=True),
            "iv": as_float(df, path, "iv", positive=True),
            "rate": as_float(df, path, "rate", positive=False)
            if "rate" in df.columns
            else pl.Series([default_rate] * n, dtype=pl.Float64),
            "funding": as_float(df, path, "funding", positive=False)
            if "funding" in df.columns
            else pl.Series([0.0] * n, dtype=pl.Float64),
        }
    )
    check_increasing(out["ts"], out["path_id"], path)
    return out


def _ns(value: dt.datetime) -> int:
    return int(value.timestamp()) * 1_000_000_000 + value.microsecond * 1_000


def load_market(
    path: str | Path,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    default_rate: float = 0.0,
) -> Market:
    """Read a market file or folder, keep ticks with start <= ts < end."""
    path = Path(path)
    parts = [validate_market(read_parquet(f), f, default_rate) for f in parquet_files(path)]
    return market_from_frames(parts, path, start, end)


def market_from_frames(
    parts: list[pl.DataFrame],
    source: Path | str,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
) -> Market:
    """Join validated frames into per-path blocks of ticks within [start, end)."""
    df = pl.concat(parts) if len(parts) > 1 else parts[0]
    if len(parts) > 1:
        check_increasing(df["ts"], df["path_id"], source)
    if start is not None:
        df = df.filter(pl.col("ts") >= _ns(start))
    if end is not None:
        df = df.filter(pl.col("ts") < _ns(end))
    df = df.sort("path_id", "ts", maintain_order=True)
    counts = df.group_by("path_id", maintain_order=True).len().sort("path_id")
    if df.height == 0:
        raise InputError.at(source, "ts", None, f"no ticks in the window [{start}, {end})")
    if int(counts["len"].min()) < 2:
        bad = int(counts.filter(pl.col("len") < 2)["path_id"][0])
        raise InputError.at(source, "ts", None, f"path {bad} has fewer than 2 ticks in the window")
    offsets = np.concatenate([[0], np.cumsum(counts["len"].to_numpy())]).astype(np.int64)
    return Market(
        ts=df["ts"].to_numpy().astype(np.int64),
        spot=df["spot"].to_numpy().astype(np.float64),
        iv=df["iv"].to_numpy().astype(np.float64),
        rate=df["rate"].to_numpy().astype(np.float64),
        funding=df["funding"].to_numpy().astype(np.float64),
        path_ids=counts["path_id"].to_numpy().astype(np.int64),
        offsets=offsets,
        multi_path=counts.height > 1,
    )
