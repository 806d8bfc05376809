"""Parameter sweeps: one run folder per point, resumable, the same table from every executor."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scenarios import market_frame

from backtest.config import build_strategy
from backtest.errors import InputError
from backtest.inputs.simulate import simulate, write_paths
from backtest.results.summary import tail_risk
from backtest.sweep import PointResult, heatmap, sweep

pytestmark = pytest.mark.e2e

GRID = {"hedge.threshold": [0.01, 0.05], "pricing.base_fee": [0.005, 0.02]}


@pytest.fixture(scope="module")
def strategy(tmp_path_factory):
    market = tmp_path_factory.mktemp("market") / "market.parquet"
    market_frame(n_ticks=72, seed=4).write_parquet(market)
    return build_strategy(
        {"name": "tiny", "data": {"market": str(market)}, "flow": {"trades_per_day": 30.0}}
    )


@pytest.fixture(scope="module")
def paths_file(tmp_path_factory):
    """Volatile paths and a small, unhedged, dynamically collateralised pool: some paths fail."""
    path = tmp_path_factory.mktemp("paths") / "paths.parquet"
    return write_paths(simulate("gbm", n_paths=16, n_ticks=96, seed=3, sigma=1.5), path)


def run_folders(out: Path) -> dict[str, float]:
    return {p.name: p.stat().st_mtime_ns for p in out.iterdir()}


class Recorder:
    """on_point callback: which points ran and which were reused."""

    def __init__(self) -> None:
        self.points: list[PointResult] = []

    def __call__(self, point: PointResult, done: int, total: int) -> None:
        assert done == len(self.points) + 1 and total == 4
        self.points.append(point)

    def ran(self) -> set[str]:
        return {p.run_id for p in self.points if not p.reused}


def test_each_point_is_a_run_folder_and_a_rerun_skips_them_all(strategy, tmp_path):
    out = tmp_path / "runs"
    first = Recorder()
    result = sweep(strategy, GRID, out=out, jobs=1, on_point=first)

    assert result.frame.height == 4 and len(first.ran()) == 4
    assert result.frame.select(*GRID).rows() == [
        (0.01, 0.005),
        (0.01, 0.02),
        (0.05, 0.005),
        (0.05, 0.02),
    ]
    folders = run_folders(out)
    assert set(folders) == set(result.frame["run_id"])
    for row in result.frame.iter_rows(named=True):
        run = pl.read_parquet(out / row["run_id"] / "summary.parquet")
        assert run["lp_return"].item() == row["lp_return"]
    assert result.path == tmp_path / "sweeps" / result.sweep_id
    assert pl.read_parquet(result.path / "summary.parquet").equals(result.frame)

    again = Recorder()
    rerun = sweep(strategy, GRID, out=out, jobs=1, on_point=again)
    assert again.ran() == set() and rerun.n_reused == 4
    assert run_folders(out) == folders
    assert rerun.frame.equals(result.frame) and rerun.path == result.path


def test_only_missing_points_rerun(strategy, tmp_path):
    out = tmp_path / "runs"
    result = sweep(strategy, GRID, out=out, jobs=1)
    deleted = result.frame["run_id"][2]
    shutil.rmtree(out / deleted)
    kept = run_folders(out)

    record = Recorder()
    rerun = sweep(strategy, GRID, out=out, jobs=1, on_point=record)
    assert record.ran() == {deleted}
    assert {k: v for k, v in run_folders(out).items() if k != deleted} == kept
    assert rerun.frame.equals(result.frame)


def test_an_interrupted_sweep_resumes(strategy, tmp_path):
    """A point killed while writing leaves only a dot-named temporary folder, which does not
    count as done; points finished before the interruption are kept."""
    out = tmp_path / "runs"

    def stop_after_first(point: PointResult, done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sweep(strategy, GRID, out=out, jobs=1, on_point=stop_after_first)
    (finished,) = run_folders(out)
    complete = sweep(strategy, GRID, out=tmp_path / "reference", jobs=1)
    half_written = out / f".{complete.frame['run_id'][1]}.abc123"
    half_written.mkdir()
    (half_written / "config.toml").write_text("")

    record = Recorder()
    resumed = sweep(strategy, GRID, out=out, jobs=1, on_point=record)
    assert record.ran() == set(complete.frame["run_id"]) - {finished}
    assert resumed.frame.equals(complete.frame)


def test_serial_local_and_dask_agree(strategy, paths_file, tmp_path):
    pytest.importorskip("distributed")
    grid = {"hedge.threshold": [0.01, 0.05], "hedge.policy": ["threshold", "every_trade"]}
    runs = {
        name: sweep(strategy, grid, paths=paths_file, out=tmp_path / name / "runs", **kw)
        for name, kw in {
            "serial": {"jobs": 1},
            "local": {"jobs": 2},
            "dask": {"jobs": 2, "executor": "dask"},
        }.items()
    }
    serial = runs.pop("serial")
    assert serial.n_reused == 0
    for name, other in runs.items():
        assert other.n_reused == 0, name
        assert other.sweep_id == serial.sweep_id, name
        assert other.frame.equals(serial.frame), name
        for a, b in zip(serial.points, other.points, strict=True):
            assert a.summary.equals(b.summary), name


def test_multi_path_points_report_tail_risk_and_insolvency(paths_file, tmp_path):
    """A small, unhedged pool that writes calls on margin and is never liquidated: some paths end
    insolvent."""
    pool = {
        "initial_capital": 20_000.0,
        "collateral": "dynamic",
        "max_utilisation": 10.0,
        "liquidation_threshold": 100.0,
    }
    strategy = build_strategy(
        {
            "name": "fragile",
            "pool": pool,
            "flow": {"trades_per_day": 40.0, "buy_fraction": 1.0},
            "hedge": {"policy": "none"},
        }
    )
    grid = {"pricing.base_fee": [0.0, 0.01]}
    result = sweep(strategy, grid, paths=paths_file, out=tmp_path / "runs", jobs=1)

    assert result.frame["n_paths"].to_list() == [16, 16]
    for row in result.frame.iter_rows(named=True):
        paths = pl.read_parquet(tmp_path / "runs" / row["run_id"] / "summary.parquet")
        returns = paths["lp_return"].to_numpy()
        assert row["lp_return_mean"] == pytest.approx(returns.mean())
        assert row["lp_return_q50"] == pytest.approx(np.median(returns))
        assert (row["var_95"], row["es_95"]) == pytest.approx(tail_risk(returns, 0.95))
        assert row["p_insolvent"] == pytest.approx(paths["insolvent"].mean())
        assert row["mean_max_drawdown"] == pytest.approx(paths["max_drawdown"].mean())
        assert 0 < row["p_insolvent"] < 1


@pytest.mark.parametrize(
    ("grid", "problem"),
    [
        ({"hedge.threshhold": [0.01]}, "unknown key"),
        ({"hedging.threshold": [0.01]}, "unknown key"),
        ({"hedge.threshold": [0.01, -1.0]}, "-1.0"),
        ({"hedge.policy": ["threshold", "sometimes"]}, "sometimes"),
        ({"hedge.threshold": []}, "one or more values"),
        ({"hedge.threshold": 0.01}, "one or more values"),
        ({"hedge.threshold": [1, 1.0]}, "repeats"),
    ],
)
def test_bad_grid_fails_before_any_run(strategy, tmp_path, grid, problem):
    with pytest.raises(InputError, match=problem):
        sweep(strategy, {"pricing.base_fee": [0.01, 0.02], **grid}, out=tmp_path / "runs")
    assert not tmp_path.joinpath("runs").exists()


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"executor": "spark"}, "executor"),
        ({"jobs": 0}, "jobs"),
        ({"scheduler": "tcp://127.0.0.1:8786"}, "scheduler"),
        ({"paths": Path("no-such-file.parquet")}, "not found"),
    ],
)
def test_bad_options_fail_before_any_run(strategy, tmp_path, options, problem):
    with pytest.raises(InputError, match=problem):
        sweep(strategy, GRID, out=tmp_path / "runs", **options)
    assert not tmp_path.joinpath("runs").exists()


def test_heatmap_is_a_png(strategy, tmp_path):
    result = sweep(strategy, GRID, out=tmp_path / "runs", jobs=1)
    png = heatmap(result, "hedge_cost", "hedge.threshold", "pricing.base_fee", tmp_path / "h.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5_000
    default = heatmap(result)
    assert default.parent == result.path and default.stat().st_size > 5_000
    with pytest.raises(InputError, match="metric"):
        heatmap(result, "no_such_metric")
    with pytest.raises(InputError, match="swept key"):
        heatmap(result, "lp_return", x="hedge.interval")


def test_heatmap_of_one_swept_key_is_one_row(strategy, tmp_path):
    result = sweep(strategy, {"hedge.threshold": [0.01, 0.05]}, out=tmp_path / "runs", jobs=1)
    png = heatmap(result, "n_hedges")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unreachable_scheduler_is_a_usage_error(strategy, tmp_path):
    dask = pytest.importorskip("dask")
    pytest.importorskip("distributed")
    with (
        dask.config.set({"distributed.comm.timeouts.connect": "1s"}),
        pytest.raises(InputError, match="cannot reach"),
    ):
        sweep(strategy, GRID, out=tmp_path / "runs", executor="dask", scheduler="tcp://127.0.0.1:9")
    assert not tmp_path.joinpath("runs").exists()


def test_on_start_counts_the_points_once_every_one_is_valid(strategy, tmp_path):
    """The CLI's cue to say the kernel compiles: after validation, before the first point."""
    events = []
    sweep(
        strategy,
        GRID,
        out=tmp_path,
        jobs=1,
        on_start=lambda total: events.append(("start", total)),
        on_point=lambda point, done, total: events.append(("point", done)),
    )
    assert events == [("start", 4), ("point", 1), ("point", 2), ("point", 3), ("point", 4)]
    with pytest.raises(InputError, match="hedge.nope"):
        sweep(strategy, {"hedge.nope": [1]}, out=tmp_path, jobs=1, on_start=events.append)
    assert len(events) == 5
