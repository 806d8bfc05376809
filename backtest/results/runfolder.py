"""Run folders are written whole or not at all: built in a temporary sibling, then renamed.

Tables stream in batch by batch (a Parquet row group per batch), so a run of many paths never
holds all its rows in memory; only the per-path summary rows are kept until the end.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import polars as pl
import pyarrow.parquet as pq
import tomli_w

from backtest.results.summary import distribution

if TYPE_CHECKING:
    from backtest.results.tables import Tables

TABLES = ("summary", "steps", "trades", "hedges", "series", "liquidations", "lp")
DETAIL_TABLES = TABLES[1:]


def _json_default(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value)}")


def _toml_safe(value: Any) -> Any:
    """TOML has no null: drop None values (the strategy's defaults restore them on load)."""
    if isinstance(value, dict):
        return {k: _toml_safe(v) for k, v in value.items() if v is not None}
    return value


class RunFolderWriter:
    """`with RunFolderWriter(final, resolved) as w: w.add(summary, tables)` per batch."""

    def __init__(
        self, final: Path, resolved: dict, keep_tables: bool = True, report: bool = False
    ) -> None:
        self.final = final
        self.resolved = resolved
        self.keep_tables = keep_tables
        self.report = report
        self.summaries: list[pl.DataFrame] = []
        self.writers: dict[str, pq.ParquetWriter] = {}

    def __enter__(self) -> RunFolderWriter:
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.final.name}.", dir=self.final.parent))
        return self

    def add(self, summary: pl.DataFrame, tables: Tables) -> None:
        self.summaries.append(summary)
        if not self.keep_tables:
            return
        for name in DETAIL_TABLES:
            table = getattr(tables, name).to_arrow()
            writer = self.writers.get(name)
            if writer is None:
                writer = pq.ParquetWriter(self.tmp / f"{name}.parquet", table.schema)
                self.writers[name] = writer
            writer.write_table(table.cast(writer.schema))

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        for writer in self.writers.values():
            writer.close()
        if error is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        try:
            self._finish()
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise

    def _finish(self) -> None:
        tmp, final = self.tmp, self.final
        (tmp / "config.toml").write_text(tomli_w.dumps(_toml_safe(self.resolved)))
        summary = pl.concat(self.summaries, how="diagonal_relaxed")
        summary = summary.with_columns(n_paths=pl.lit(summary.height, pl.Int64))  # not per batch
        rows = summary.to_dicts()
        doc = {"run_id": final.name, "n_paths": len(rows), "paths": rows}
        if len(rows) > 1:
            doc["distribution"] = distribution(summary)
        (tmp / "summary.json").write_text(json.dumps(doc, indent=2, default=_json_default) + "\n")
        summary.write_parquet(tmp / "summary.parquet")
        if self.report:
            # imported here: its plots import matplotlib, 0.2 s a --no-report run need not pay
            from backtest.results.report import build_report

            build_report(tmp)
        if final.exists():
            trash = final.with_name(f".{final.name}.old-{os.getpid()}")
            final.rename(trash)
            tmp.rename(final)
            shutil.rmtree(trash)
        else:
            tmp.rename(final)


def read_table(folder: Path, name: str) -> pl.DataFrame:
    """A run table; runs that kept only summaries have no detail tables (an empty frame)."""
    path = folder / f"{name}.parquet"
    return pl.read_parquet(path) if path.exists() else pl.DataFrame()
