"""Option order flow: validated from Parquet, or generated, then aligned to market ticks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from backtest.errors import InputError
from backtest.inputs import streams
from backtest.inputs.checks import (
    as_float,
    as_int,
    as_utc_ns,
    first_bad,
    parquet_files,
    read_parquet,
    require_columns,
)
from backtest.inputs.market import Market

# The flow file schema of docs/design.md, as written by the importer and the generator.
FLOW_SCHEMA = {
    "ts": pl.Datetime("us", "UTC"),
    "expiry": pl.Datetime("us", "UTC"),
    "strike": pl.Float64,
    "kind": pl.String,
    "side": pl.Int8,
    "size": pl.Float64,
}
FLOW_COLUMNS = tuple(FLOW_SCHEMA)
ALL_PATHS = -1


def validate_flow(df: pl.DataFrame, source: Path) -> pl.DataFrame:
    """The canonical flow frame: ts/expiry as UTC ns, kind +1/-1, path_id (-1 = every path),
    and flow_row, the row as given, so results point back into the user's file."""
    require_columns(df, source, FLOW_COLUMNS)
    ts = as_utc_ns(df, source, "ts")
    expiry = as_utc_ns(df, source, "expiry")
    row = first_bad(pl.DataFrame({"ts": ts, "expiry": expiry}), pl.col("expiry") <= pl.col("ts"))
    if row is not None:
        raise InputError.at(source, "expiry", row, "expiry is not after the trade time")
    kind = df["kind"]
    if kind.dtype != pl.String:
        raise InputError.at(source, "kind", None, f'must be "C" or "P" strings, found {kind.dtype}')
    row = first_bad(df, ~pl.col("kind").is_in(["C", "P"]))
    if row is not None:
        raise InputError.at(source, "kind", row, f'must be "C" or "P", found {kind[row]!r}')
    side = as_int(df, source, "side")
    row = first_bad(side.to_frame("side"), ~pl.col("side").is_in([1, -1]))
    if row is not None:
        raise InputError.at(source, "side", row, f"must be +1 or -1, found {side[row]}")
    if "path_id" in df.columns:
        path_id = df["path_id"].fill_null(ALL_PATHS)
        path_id = as_int(path_id.to_frame("path_id"), source, "path_id")
    else:
        path_id = pl.Series([ALL_PATHS] * df.height, dtype=pl.Int64)
    informed = df["informed"].cast(pl.Boolean) if "informed" in df.columns else None
    out = pl.DataFrame(
        {
            "ts": ts,
            "expiry": expiry,
            "strike": as_float(df, source, "strike", positive=True),
            "kind": pl.Series(np.where(kind.to_numpy() == "C", 1, -1), dtype=pl.Int8),
            "side": side.cast(pl.Int8),
            "size": as_float(df, source, "size", positive=True),
            "path_id": path_id,
            "informed": informed
            if informed is not None
            else pl.Series([False] * df.height, dtype=pl.Boolean),
            "flow_row": pl.Series(range(df.height), dtype=pl.Int64),
        }
    )
    return out.sort("ts", maintain_order=True)


def public_flow(flow: pl.DataFrame) -> pl.DataFrame:
    """A canonical flow frame back in the file schema of docs/design.md, for writing."""
    utc = pl.Datetime("ns", "UTC")
    frame = flow.select(
        pl.col("ts").cast(utc).dt.cast_time_unit("us"),
        pl.col("expiry").cast(utc).dt.cast_time_unit("us"),
        "strike",
        pl.when(pl.col("kind") > 0).then(pl.lit("C")).otherwise(pl.lit("P")).alias("kind"),
        "side",
        "size",
        "path_id",
        "informed",
    )
    return frame.drop("path_id") if (frame["path_id"] == ALL_PATHS).all() else frame


def load_flow(path: str | Path) -> pl.DataFrame:
    """A file, or a folder's files in name order; flow_row counts across the files, so every
    row has its own number (and its own draw for the price-elastic trader)."""
    path = Path(path)
    frames, first = [], 0
    for f in parquet_files(path):
        frame = validate_flow(read_parquet(f), f)
        frames.append(frame.with_columns(pl.col("flow_row") + first))
        first += frame.height
    return pl.concat(frames).sort("ts", maintain_order=True)


@dataclass(frozen=True)
class AlignedFlow:
    """Flow rows of every path in time order, each with the tick that prices it.

    Path k's rows are offsets[k]:offsets[k+1]; `tick` is the path-local index of the latest market
    tick at or before the row, so the row trades at that tick's prices and never later ones.
    """

    source_row: np.ndarray  # int64: row in the flow frame
    tick: np.ndarray  # int64
    series: np.ndarray  # int64: index into the series arrays
    side: np.ndarray  # float64 +1/-1
    size: np.ndarray
    informed: np.ndarray  # bool
    u: np.ndarray  # float64 in [0, 1): the row's draw against its acceptance probability
    stale: np.ndarray  # bool: a stale-quote trader ([flow] stale_fraction of the other rows)
    offsets: np.ndarray
    series_expiry: np.ndarray  # int64 ns
    series_strike: np.ndarray
    series_kind: np.ndarray  # float64 +1/-1
    series_expiry_id: np.ndarray  # int64: series sharing an expiry share inventory impact
    series_strike_id: np.ndarray  # int64: same for (expiry, strike), calls and puts alike


def acceptance_draws(
    seed: int, path_id: int, flow_row: np.ndarray, stream: int = streams.ACCEPTANCE
) -> np.ndarray:
    """Each row's uniform for the price-elastic trader (or, stream STALE_TRADERS, whether it is
    a stale-quote trader): draw number flow_row of the path's stream, so it depends on neither
    the window, the batch nor the order rows are priced in, and an imported file gets draws
    like the generator's rows."""
    n = int(flow_row.max()) + 1 if flow_row.size else 0
    return streams.path_rng(seed, path_id, stream).random(n)[flow_row]


def align_flow(
    flow: pl.DataFrame,
    market: Market,
    end_ns: int | None,
    seed: int,
    stale_fraction: float = 0.0,
) -> AlignedFlow:
    """Assign each row to its path and pricing tick; rows outside the window are dropped."""
    keys = (
        flow.select("expiry", "strike", "kind")
        .unique(maintain_order=True)
        .sort("expiry", "strike", "kind")
    )
    keyed = (
        flow.with_row_index("source_row")
        .join(keys.with_row_index("series"), on=["expiry", "strike", "kind"], how="left")
        .sort("source_row")
    )
    parts, counts = [], []
    for k, pid in enumerate(market.path_ids):
        ts = market.ts[market.path(k)]
        rows = keyed.filter(
            pl.col("path_id").is_in([ALL_PATHS, int(pid)])
            & (pl.col("ts") >= int(ts[0]))
            & (pl.col("ts") < (end_ns if end_ns is not None else np.iinfo(np.int64).max))
        )
        tick = np.searchsorted(ts, rows["ts"].to_numpy(), side="right") - 1
        u = acceptance_draws(seed, int(pid), rows["flow_row"].to_numpy())
        stale = np.zeros(rows.height, bool)
        if stale_fraction > 0:
            draws = acceptance_draws(
                seed, int(pid), rows["flow_row"].to_numpy(), streams.STALE_TRADERS
            )
            stale = (draws < stale_fraction) & ~rows["informed"].to_numpy()
        parts.append(
            rows.with_columns(
                tick=pl.Series(tick, dtype=pl.Int64), u=pl.Series(u), stale=pl.Series(stale)
            )
        )
        counts.append(rows.height)
    rows = pl.concat(parts)
    return AlignedFlow(
        source_row=rows["source_row"].to_numpy().astype(np.int64),
        tick=rows["tick"].to_numpy().astype(np.int64),
        series=rows["series"].to_numpy().astype(np.int64),
        side=rows["side"].to_numpy().astype(np.float64),
        size=rows["size"].to_numpy().astype(np.float64),
        informed=rows["informed"].to_numpy().astype(np.bool_),
        u=rows["u"].to_numpy().astype(np.float64),
        stale=rows["stale"].to_numpy().astype(np.bool_),
        offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        series_expiry=keys["expiry"].to_numpy().astype(np.int64),
        series_strike=keys["strike"].to_numpy().astype(np.float64),
        series_kind=keys["kind"].to_numpy().astype(np.float64),
        series_expiry_id=keys["expiry"].rank("dense").to_numpy().astype(np.int64) - 1,
        series_strike_id=keys.select(pl.struct("expiry", "strike").rank("dense"))
        .to_series()
        .to_numpy()
        .astype(np.int64)
        - 1,
    )
