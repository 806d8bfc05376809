"""Run folders are written whole or not at all: build in a temporary sibling, then rename."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
import tomli_w

if TYPE_CHECKING:
    from backtest.results.tables import Tables

TABLES = ("summary", "steps", "trades", "hedges", "series")


def _json_default(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value)}")


def _toml_safe(value: Any) -> Any:
    """TOML has no null: drop None values (the strategy's defaults restore them on load)."""
    if isinstance(value, dict):
        return {k: _toml_safe(v) for k, v in value.items() if v is not None}
    return value


def write(final: Path, resolved: dict, summary: pl.DataFrame, tables: Tables) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        (tmp / "config.toml").write_text(tomli_w.dumps(_toml_safe(resolved)))
        summary_rows = summary.to_dicts()
        doc = {"run_id": final.name, "n_paths": len(summary_rows), "paths": summary_rows}
        (tmp / "summary.json").write_text(json.dumps(doc, indent=2, default=_json_default) + "\n")
        summary.write_parquet(tmp / "summary.parquet")
        for name in TABLES[1:]:
            getattr(tables, name).write_parquet(tmp / f"{name}.parquet")
        if final.exists():
            trash = final.with_name(f".{final.name}.old-{os.getpid()}")
            final.rename(trash)
            tmp.rename(final)
            shutil.rmtree(trash)
        else:
            tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_tables(folder: Path) -> dict[str, pl.DataFrame]:
    return {name: pl.read_parquet(folder / f"{name}.parquet") for name in TABLES}
