"""DuckDB over every run folder: one view per table, unioned by column name so runs written by
different engine versions (with more or fewer columns) still query together."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import polars as pl

from backtest.errors import InputError

DEFAULT_REPORTS = Path("reports") / "runs"
# view -> the Parquet file each run folder holds it in
VIEWS = {
    "runs": "summary.parquet",
    "steps": "steps.parquet",
    "trades": "trades.parquet",
    "hedges": "hedges.parquet",
    "series": "series.parquet",
    "liquidations": "liquidations.parquet",
    "lp": "lp.parquet",
}


def run_folders(reports: Path) -> list[Path]:
    """Complete run folders: names starting with "." are temporary or being replaced."""
    if not reports.is_dir():
        return []
    return sorted(p for p in reports.iterdir() if p.is_dir() and not p.name.startswith("."))


def _source(reports: Path, file: str) -> str:
    """SQL for one view: the union of that file over all runs, or no rows when there is none."""
    files = [f / file for f in run_folders(reports) if (f / file).is_file()]
    if not files:
        return "SELECT NULL::VARCHAR AS run_id, NULL::BIGINT AS path_id WHERE false"
    quoted = ", ".join("'" + str(f.resolve()).replace("'", "''") + "'" for f in files)
    return f"SELECT * FROM read_parquet([{quoted}], union_by_name = true)"


def _define(con: duckdb.DuckDBPyConnection, reports: Path, kind: str) -> None:
    con.execute("SET TimeZone = 'UTC'")
    for view, file in VIEWS.items():
        con.execute(f"CREATE OR REPLACE {kind} {view} AS {_source(Path(reports), file)}")


def open_catalog(reports: Path = DEFAULT_REPORTS) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the views runs, steps, trades, hedges, series, liquidations and
    lp; timestamps are shown in UTC. The views list the run folders present when it is opened;
    with none, each view has only run_id and path_id, and no rows."""
    con = duckdb.connect()
    _define(con, reports, "VIEW")
    return con


def _one_line(exc: duckdb.Error) -> str:
    return next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


def query(sql: str, reports: Path = DEFAULT_REPORTS) -> pl.DataFrame:
    """Run SQL over the catalog; a bad query is an InputError with DuckDB's first message line."""
    try:
        with open_catalog(reports) as con:
            result = con.sql(sql)
            return pl.DataFrame() if result is None else result.pl()
    except duckdb.Error as exc:
        raise InputError(f"sql: {_one_line(exc)}") from None


def export(path: Path, reports: Path = DEFAULT_REPORTS) -> Path:
    """Write a standalone .duckdb file with the catalog's views as tables (a snapshot: it opens
    with any DuckDB client and does not need the run folders). Written beside, then renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        with duckdb.connect(str(tmp)) as con:
            _define(con, reports, "TABLE")
        os.replace(tmp, path)
    except duckdb.Error as exc:
        raise InputError(f"export {path}: {_one_line(exc)}") from None
    finally:
        tmp.unlink(missing_ok=True)
        Path(f"{tmp}.wal").unlink(missing_ok=True)
    return path
