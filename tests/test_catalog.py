"""The DuckDB catalog over run folders: views, unions across runs and versions, errors, export."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import polars as pl
import pytest
from scenarios import make_run

from backtest.errors import InputError
from backtest.results.catalog import VIEWS, export, open_catalog, query

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> Path:
    """Two complete runs, a half-written temporary folder and a stray file."""
    root = tmp_path_factory.mktemp("catalog")
    first = make_run(root, seed=0)
    make_run(
        root,
        seed=1,
        hedge={"policy": "every_trade"},
        lp={"run_drawdown": 0.0002, "run_fraction": 0.9},  # LPs who run: exits and their closes
    )
    shutil.copytree(first, root / "runs" / f".{first.name}.tmp123")
    (root / "runs" / "notes.txt").write_text("not a run")
    return root / "runs"


def test_every_view_unions_the_runs(reports):
    runs = query("SELECT run_id, n_paths, final_nav FROM runs ORDER BY run_id", reports)
    assert runs.height == 2 and runs["run_id"].n_unique() == 2
    steps = query("SELECT run_id, count(*) AS n FROM steps GROUP BY run_id", reports)
    assert steps["n"].to_list() == [96, 96]
    for view in VIEWS:
        counted = query(f"SELECT count(DISTINCT run_id) AS n FROM {view}", reports)
        # Only the second run had LPs who ran (and so closes its exits forced).
        assert counted["n"][0] == (1 if view in ("liquidations", "lp") else 2), view


def test_runs_view_joins_back_to_the_tables(reports):
    check = query(
        """
        SELECT r.run_id, r.final_nav, last(s.nav ORDER BY s.ts) AS last_nav
        FROM runs r JOIN steps s USING (run_id, path_id) GROUP BY ALL
        """,
        reports,
    )
    assert (check["final_nav"] - check["last_nav"]).abs().max() == 0


def test_runs_of_different_versions_still_union(reports, tmp_path):
    """An older run without some columns, another with an extra one: union by name."""
    root = tmp_path / "runs"
    shutil.copytree(reports, root, ignore=shutil.ignore_patterns(".*"))
    old, new = sorted(p for p in root.iterdir() if p.is_dir())
    summary = pl.read_parquet(old / "summary.parquet")
    summary.drop("volatility", "fill_ratio").write_parquet(old / "summary.parquet")
    steps = pl.read_parquet(new / "steps.parquet")
    steps.with_columns(extra=pl.lit(1.0)).write_parquet(new / "steps.parquet")
    runs = query("SELECT run_id, volatility FROM runs ORDER BY run_id", root)
    assert runs.height == 2 and runs["volatility"].null_count() == 1
    extra = query("SELECT count(extra) AS n, count(*) AS total FROM steps", root)
    assert extra.row(0) == (96, 192)


def test_bad_sql_is_an_input_error_with_one_line(reports):
    for sql in ("SELEC 1", "SELECT * FROM no_such_view", "SELECT no_such_column FROM runs"):
        with pytest.raises(InputError) as err:
            query(sql, reports)
        assert "\n" not in str(err.value) and str(err.value).startswith("sql: ")


@pytest.mark.parametrize("make", [lambda p: p, lambda p: p.mkdir() or p])
def test_missing_or_empty_reports_folder_gives_empty_views(tmp_path, make):
    root = make(tmp_path / "runs")
    for view in VIEWS:
        assert query(f"SELECT count(*) AS n FROM {view}", root)["n"][0] == 0
    with open_catalog(root) as con:
        assert con.sql("SELECT count(*) FROM runs").fetchall() == [(0,)]


def test_export_opens_with_a_plain_duckdb_client(reports, tmp_path):
    target = export(tmp_path / "out" / "catalog.duckdb", reports)
    with duckdb.connect(str(target), read_only=True) as con:
        assert con.sql("SELECT count(*) FROM runs").fetchall() == [(2,)]
        assert con.sql("SELECT count(*) FROM steps").fetchall() == [(192,)]
        tables = {row[0] for row in con.sql("SHOW TABLES").fetchall()}
    assert tables == set(VIEWS)
    assert sorted(p.name for p in target.parent.iterdir()) == ["catalog.duckdb"]
    export(target, reports)  # overwrites in place
    with duckdb.connect(str(target), read_only=True) as con:
        assert con.sql("SELECT count(*) FROM runs").fetchall() == [(2,)]


def test_example_queries_in_docs_run(reports):
    """Every ```sql block of docs/queries.md runs against real run folders and returns rows."""
    docs = Path(__file__).resolve().parents[1] / "docs" / "queries.md"
    blocks = docs.read_text().split("```sql")[1:]
    assert len(blocks) >= 3
    for block in blocks:
        assert query(block.split("```", 1)[0], reports).height > 0
