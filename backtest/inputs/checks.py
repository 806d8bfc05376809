"""Column checks shared by every loader: each failure names file, column and first bad row."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from backtest.errors import InputError


def read_parquet(path: Path) -> pl.DataFrame:
    try:
        # ParquetFile, not pq.read_table: that imports pyarrow.dataset (30 ms) for one file
        with pq.ParquetFile(path) as parquet:
            return pl.from_arrow(parquet.read())
    except FileNotFoundError:
        raise InputError.at(path, None, None, "file not found") from None
    except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
        raise InputError.at(path, None, None, f"not a readable Parquet file ({exc})") from None


def parquet_files(path: Path) -> list[Path]:
    """A Parquet file, or every *.parquet in a folder (in name order)."""
    if path.is_dir():
        files = sorted(path.glob("*.parquet"))
        if not files:
            raise InputError.at(path, None, None, "folder holds no .parquet files")
        return files
    if not path.exists():
        raise InputError.at(path, None, None, "file not found")
    return [path]


def first_bad(df: pl.DataFrame, bad: pl.Expr) -> int | None:
    rows = df.select(pl.arg_where(bad.fill_null(True)).first()).item()
    return None if rows is None else int(rows)


def require_columns(df: pl.DataFrame, source: Path, required: tuple[str, ...]) -> None:
    for name in required:
        if name not in df.columns:
            raise InputError.at(source, name, None, "missing required column")


def as_utc_ns(df: pl.DataFrame, source: Path, column: str) -> pl.Series:
    """A timestamp column as UTC nanoseconds; naive timestamps are taken as UTC."""
    series = df[column]
    if not isinstance(series.dtype, pl.Datetime):
        raise InputError.at(source, column, None, f"must be a timestamp, found {series.dtype}")
    if series.dtype.time_zone is not None:
        series = series.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
    row = first_bad(df.with_columns(series.alias("__t")), pl.col("__t").is_null())
    if row is not None:
        raise InputError.at(source, column, row, "missing timestamp")
    return series.dt.cast_time_unit("ns").cast(pl.Int64)


def as_float(df: pl.DataFrame, source: Path, column: str, positive: bool) -> pl.Series:
    series = df[column]
    if not series.dtype.is_numeric():
        raise InputError.at(source, column, None, f"must be numeric, found {series.dtype}")
    series = series.cast(pl.Float64)
    bad = ~pl.col(column).is_finite()
    if positive:
        bad = bad | (pl.col(column) <= 0)
    row = first_bad(series.to_frame(column), bad)
    if row is not None:
        value = series[row]
        need = "a finite number > 0" if positive else "a finite number"
        raise InputError.at(source, column, row, f"must be {need}, found {value}")
    return series


def as_int(df: pl.DataFrame, source: Path, column: str) -> pl.Series:
    series = df[column]
    if not series.dtype.is_integer():
        raise InputError.at(source, column, None, f"must be an integer, found {series.dtype}")
    row = first_bad(series.to_frame(column), pl.col(column).is_null())
    if row is not None:
        raise InputError.at(source, column, row, "missing value")
    return series.cast(pl.Int64)


def check_increasing(ts: pl.Series, path_id: pl.Series, source: Path) -> None:
    """Timestamps strictly increase within each path (rows of a path may be interleaved)."""
    frame = pl.DataFrame({"ts": ts, "path_id": path_id}).with_row_index("row")
    bad = frame.with_columns(prev=pl.col("ts").shift(1).over("path_id")).filter(
        pl.col("ts") <= pl.col("prev")
    )
    if bad.height:
        first = bad.sort("row").row(0, named=True)
        kind = "duplicate" if first["ts"] == first["prev"] else "unsorted"
        raise InputError.at(
            source, "ts", first["row"], f"{kind} timestamp (must strictly increase)"
        )
