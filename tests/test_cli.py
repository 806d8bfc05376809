"""`dhlp` as a user runs it: the default run, run folders, reruns, data commands, bench."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import polars as pl
import pytest
from scenarios import REPO as PROJECT_ROOT
from scenarios import market_frame
from typer.testing import CliRunner

from backtest.cli import app
from backtest.runner import DEFAULT_STRATEGY

pytestmark = pytest.mark.e2e

runner = CliRunner()
SAMPLE = PROJECT_ROOT / "tests" / "fixtures" / "deribit_btc_option_trades_SAMPLE_2026-08-16.parquet"
SHORT_DEFAULT = ["--set", 'data.start="2022-07-01"', "--set", 'data.end="2022-08-15"']


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


@pytest.fixture(scope="module")
def default_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    result = invoke("run", "--out", str(out), "--no-report", *SHORT_DEFAULT)
    assert result.exit_code == 0, result.output
    (folder,) = list(out.iterdir())
    return folder


def test_strategies_lists_the_bundled_library_and_runs_one_by_name(tmp_path):
    listed = invoke("strategies")
    assert listed.exit_code == 0
    names = sorted(p.stem for p in (PROJECT_ROOT / "strategies").glob("*.toml"))
    for name in names:
        assert name in listed.output
    assert "what does hedging buy LPs?" in listed.output
    result = invoke("run", "unhedged", "--out", str(tmp_path), "--no-report", *SHORT_DEFAULT)
    assert result.exit_code == 0, result.output
    (folder,) = list(tmp_path.iterdir())
    assert folder.name.startswith("unhedged-")
    assert pl.read_parquet(folder / "hedges.parquet").height == 0


def test_default_run_writes_every_table(default_run):
    for name in (
        "config.toml",
        "summary.json",
        "summary.parquet",
        "steps.parquet",
        "trades.parquet",
        "hedges.parquet",
        "series.parquet",
        "liquidations.parquet",
        "lp.parquet",
    ):
        assert (default_run / name).is_file(), name
    steps = pl.read_parquet(default_run / "steps.parquet")
    for column in (
        "run_id",
        "path_id",
        "ts",
        "spot",
        "iv",
        "nav",
        "cash",
        "hedge_units",
        "book_delta",
        "net_delta",
        "book_gamma",
        "book_vega",
        "book_theta",
        "collateral_required",
        "utilisation",
        "pnl_delta",
        "pnl_gamma",
        "pnl_vega",
        "pnl_theta",
        "pnl_vanna",
        "pnl_volga",
        "pnl_residual",
        "pnl_fees",
        "pnl_hedge_cost",
        "pnl_funding",
        "pnl_interest",
        "pnl_liquidation",
        "pnl_total",
        "lp_flow",
    ):
        assert column in steps.columns, column
    assert steps["run_id"].unique().to_list() == [default_run.name]
    summary = json.loads((default_run / "summary.json").read_text())
    assert summary["run_id"] == default_run.name
    (row,) = summary["paths"]
    assert row["n_trades"] > 100 and row["n_hedges"] > 0
    assert row["reconcile_max_abs"] < 1e-6
    config = tomllib.loads((default_run / "config.toml").read_text())
    assert config["strategy"]["hedge"]["policy"] == "threshold"
    assert len(config["run"]["market_sha256"]) == 64
    assert default_run.name.startswith("default-")


def test_identical_rerun_is_recognised_and_force_reruns(default_run):
    out = default_run.parent
    again = invoke("run", "--out", str(out), "--no-report", *SHORT_DEFAULT)
    assert again.exit_code == 0
    assert "identical run exists" in again.output
    before = (default_run / "steps.parquet").stat().st_mtime_ns
    forced = invoke("run", "--out", str(out), "--no-report", "--force", *SHORT_DEFAULT)
    assert forced.exit_code == 0 and "identical run exists" not in forced.output
    assert (default_run / "steps.parquet").stat().st_mtime_ns != before
    assert sorted(p.name for p in out.iterdir()) == [default_run.name]  # no temp folders left


def test_a_changed_parameter_is_a_new_run(default_run, tmp_path):
    result = invoke(
        "run",
        "--out",
        str(tmp_path),
        "--no-report",
        *SHORT_DEFAULT,
        "--set",
        "hedge.threshold=0.05",
    )
    assert result.exit_code == 0
    (folder,) = list(tmp_path.iterdir())
    assert folder.name != default_run.name
    summary = pl.read_parquet(folder / "summary.parquet")
    assert summary["n_hedges"][0] < pl.read_parquet(default_run / "summary.parquet")["n_hedges"][0]


def test_run_id_and_seed_options(tmp_path):
    result = invoke(
        "run", "--out", str(tmp_path), "--run-id", "mine", "--seed", "11", *SHORT_DEFAULT
    )
    assert result.exit_code == 0
    config = tomllib.loads((tmp_path / "mine" / "config.toml").read_text())
    assert config["strategy"]["flow"]["seed"] == 11


def test_market_and_flow_files_from_the_command_line(tmp_path):
    market = market_frame(48)
    market.write_parquet(tmp_path / "m.parquet")
    synth = invoke(
        "data",
        "synth-flow",
        "--market",
        str(tmp_path / "m.parquet"),
        "--out",
        str(tmp_path / "f.parquet"),
    )
    assert synth.exit_code == 0, synth.output
    flow = pl.read_parquet(tmp_path / "f.parquet")
    assert flow.height > 0
    result = invoke(
        "run",
        "--market",
        str(tmp_path / "m.parquet"),
        "--flow",
        str(tmp_path / "f.parquet"),
        "--out",
        str(tmp_path / "runs"),
    )
    assert result.exit_code == 0, result.output
    (folder,) = list((tmp_path / "runs").iterdir())
    trades = pl.read_parquet(folder / "trades.parquet")
    assert trades.height == flow.height


def test_validate_bundled_data():
    files = sorted(str(p) for p in (PROJECT_ROOT / "data").glob("*.parquet"))
    result = invoke("data", "validate", *files)
    assert result.exit_code == 0, result.output
    assert result.output.count("ok ") == len(files)


def test_import_deribit_sample(tmp_path):
    result = invoke("data", "import", str(SAMPLE), "--out", str(tmp_path / "flow.parquet"))
    assert result.exit_code == 0, result.output
    flow = pl.read_parquet(tmp_path / "flow.parquet")
    assert flow.height == 277
    check = invoke("data", "validate", str(tmp_path / "flow.parquet"))
    assert check.exit_code == 0


def test_unknown_import_format(tmp_path):
    result = invoke(
        "data", "import", str(tmp_path / "x.csv"), "--out", str(tmp_path / "y"), "--format", "okx"
    )
    assert result.exit_code == 2 and "--format" in result.output


def test_bench_prints_json():
    result = invoke("bench", "--ticks", "10080", "--trades", "500", "--no-compile", "--no-start-up")
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    assert figures["ticks"] == 10080 and figures["trades_filled"] > 0
    assert figures["kernel_vs_floor"] > 0 and figures["run_vs_floor"] > figures["kernel_vs_floor"]
    assert invoke("bench", "--ticks", "100").exit_code == 2


def test_default_strategy_is_bundled():
    assert DEFAULT_STRATEGY.is_file()


def test_simulate_then_run_many_paths(tmp_path):
    sim = invoke(
        "data",
        "simulate",
        "gbm",
        "--paths",
        "3",
        "--ticks",
        "48",
        "--seed",
        "2",
        "--set",
        "sigma=0.9",
        "--out",
        str(tmp_path / "paths.parquet"),
    )
    assert sim.exit_code == 0, sim.output
    frame = pl.read_parquet(tmp_path / "paths.parquet")
    assert frame["path_id"].n_unique() == 3 and frame.height == 3 * 48
    result = invoke(
        "run", "--market", str(tmp_path / "paths.parquet"), "--out", str(tmp_path / "runs")
    )
    assert result.exit_code == 0, result.output
    (folder,) = list((tmp_path / "runs").iterdir())
    assert pl.read_parquet(folder / "summary.parquet").height == 3


def test_simulate_bad_parameter_is_one_line(tmp_path):
    result = invoke(
        "data", "simulate", "heston", "--set", "xi=-1", "--out", str(tmp_path / "x.parquet")
    )
    assert result.exit_code == 2
    assert "heston.xi" in result.output and not (tmp_path / "x.parquet").exists()


def test_report_and_sql_commands(default_run, tmp_path):
    runs = default_run.parent
    rebuilt = invoke("report", str(default_run))
    assert rebuilt.exit_code == 0, rebuilt.output
    html = (default_run / "report.html").read_text()
    assert "data:image/png;base64," in html and "http://" not in html and "https://" not in html
    by_id = invoke("report", default_run.name, "--runs", str(runs))
    assert by_id.exit_code == 0
    table = invoke("sql", "select run_id, n_trades from runs", "--reports", str(runs))
    assert table.exit_code == 0 and default_run.name in table.output
    as_csv = invoke(
        "sql",
        "select count(*) as n from steps",
        "--reports",
        str(runs),
        "--format",
        "csv",
        "--export",
        str(tmp_path / "all.duckdb"),
    )
    assert as_csv.exit_code == 0
    assert int(as_csv.output.splitlines()[1]) > 1000
    assert (tmp_path / "all.duckdb").stat().st_size > 0
    bad = invoke("sql", "select nope from runs", "--reports", str(runs))
    assert bad.exit_code == 2 and bad.output.startswith("error: sql:")
    empty = invoke(
        "sql",
        "select count(*) as n from runs",
        "--reports",
        str(tmp_path / "none"),
        "--format",
        "json",
    )
    assert empty.exit_code == 0 and json.loads(empty.output) == [{"n": 0}]
    missing = invoke("report", str(tmp_path / "nothing"))
    assert missing.exit_code == 2


def test_run_writes_a_report_unless_told_not_to(tmp_path):
    result = invoke("run", "--out", str(tmp_path), *SHORT_DEFAULT)
    assert result.exit_code == 0, result.output
    (folder,) = list(tmp_path.iterdir())
    assert (folder / "report.html").is_file()
    assert len(list((folder / "plots").glob("*.png"))) >= 5


def test_package_level_api(tmp_path):
    import backtest

    run = backtest.run(out=tmp_path, data__start="2022-07-01", data__end="2022-07-10")
    assert run.summary.height == 1 and run.steps.height == 10 * 24  # end date is inclusive
    with backtest.open_catalog(tmp_path) as con:
        assert con.sql("select count(*) from runs").fetchall() == [(1,)]
    with pytest.raises(AttributeError):
        backtest.nothing  # noqa: B018


def test_sweep_command_runs_the_grid_then_resumes(tmp_path):
    paths = tmp_path / "paths.parquet"
    assert (
        invoke(
            "data", "simulate", "gbm", "--paths", "4", "--ticks", "48", "--out", str(paths)
        ).exit_code
        == 0
    )
    args = (
        "sweep",
        str(DEFAULT_STRATEGY),
        "--set",
        "hedge.threshold=0.01,0.05",
        "--set",
        "pricing.base_fee=0.005,0.02",
        "--paths",
        str(paths),
        "--out",
        str(tmp_path / "runs"),
        "--keep",
        "summary",
        "--jobs",
        "1",
        "--metric",
        "var_95",
    )
    first = invoke(*args)
    assert first.exit_code == 0, first.output
    assert "4 points: 4 run, 0 reused" in first.output
    assert len(list((tmp_path / "runs").iterdir())) == 4
    again = invoke(*args)
    assert "4 points: 0 run, 4 reused" in again.output
    heatmap = again.output.split("heatmap: ")[1].strip()
    assert Path(heatmap).stat().st_size > 1000
    bad = invoke("sweep", str(DEFAULT_STRATEGY), "--set", "hedge.nope=1,2", "--out", str(tmp_path))
    assert bad.exit_code == 2 and "hedge.nope" in bad.output


def test_a_summary_only_run_is_not_reused_for_a_full_one(tmp_path):
    import backtest

    window = {"data__start": "2022-07-01", "data__end": "2022-07-03"}
    lean = backtest.run(out=tmp_path, keep="summary", **window)
    assert not (lean.path / "steps.parquet").exists()
    full = backtest.run(out=tmp_path, **window)
    assert not full.reused and full.steps.height == 3 * 24


def test_a_multi_path_run_prints_the_distribution_and_its_progress(tmp_path):
    """Three batches of paths: without a terminal, a progress line after each, then the
    across-path distribution with its sign convention."""
    from backtest.fmt import pct
    from backtest.results.summary import distribution

    paths = tmp_path / "paths.parquet"
    sim = invoke("data", "simulate", "gbm", "--paths", "130", "--ticks", "24", "--out", str(paths))
    assert sim.exit_code == 0, sim.output
    result = invoke("run", "--market", str(paths), "--out", str(tmp_path / "runs"), "--no-report")
    assert result.exit_code == 0, result.output
    progress = [line.split(",")[0] for line in result.stderr.splitlines()]
    assert progress == ["running: 64/130 paths", "running: 128/130 paths", "running: 130/130 paths"]
    (folder,) = list((tmp_path / "runs").iterdir())
    dist = distribution(pl.read_parquet(folder / "summary.parquet"))
    lines = {line.strip("│ ").split("│")[0].strip(): line for line in result.stdout.splitlines()}
    for label, key in (
        ("LP return, mean", "lp_return_mean"),
        ("LP return, median", "lp_return_q50"),
        ("VaR 95 % (loss, positive = loss)", "var_95"),
        ("ES 95 % (mean loss of the worst 5 % of paths, positive = loss)", "es_95"),
        ("P(insolvent)", "p_insolvent"),
    ):
        assert pct(dist[key]) in lines[label], (label, lines.get(label))
    assert "130 paths" in result.stdout


def test_bootstrap_outside_the_repository_resamples_the_bundled_history(tmp_path, monkeypatch):
    from backtest import bundled

    monkeypatch.chdir(tmp_path)
    result = invoke(
        "data", "simulate", "bootstrap", "--paths", "2", "--ticks", "5", "--out", "b.parquet"
    )
    assert result.exit_code == 0, result.output
    first_spot = pl.read_parquet(bundled.folder("data") / "eth_1h.parquet")["spot"][0]
    assert pl.read_parquet(tmp_path / "b.parquet")["spot"][0] == first_spot
    daily = invoke(
        "data",
        "simulate",
        "bootstrap",
        "--ticks",
        "3",
        "--set",
        "history=data/btc_1d.parquet",
        "--out",
        "d.parquet",
    )
    assert daily.exit_code == 0, daily.output
    assert pl.read_parquet(tmp_path / "d.parquet")["ts"].diff()[1].days == 1


def test_sweep_takes_a_bundled_strategy_name(tmp_path):
    window = 'data.end="2022-07-03"'
    args = ["sweep", "unhedged", "--set", window, "--set", "pricing.base_fee=0.01,0.02"]
    result = invoke(*args, "--jobs", "1", "--out", str(tmp_path / "runs"))
    assert result.exit_code == 0, result.output
    folders = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert len(folders) == 2 and all(name.startswith("unhedged-") for name in folders)
    assert all(
        pl.read_parquet(tmp_path / "runs" / f / "hedges.parquet").height == 0 for f in folders
    )


def test_a_run_reports_progress_from_before_its_first_batch(tmp_path):
    """on_batch(0, total) comes before the kernel starts (the CLI's cue to say it compiles);
    an identical rerun runs no batch and calls nothing."""
    import backtest

    paths = tmp_path / "paths.parquet"
    pl.concat(
        [market_frame(24, seed=s).with_columns(path_id=pl.lit(s)) for s in range(3)]
    ).write_parquet(paths)
    calls = []
    backtest.run(market=paths, out=tmp_path / "runs", on_batch=lambda *c: calls.append(c))
    assert calls == [(0, 3), (3, 3)]
    rerun = backtest.run(market=paths, out=tmp_path / "runs", on_batch=lambda *c: calls.append(c))
    assert rerun.reused and calls == [(0, 3), (3, 3)]
