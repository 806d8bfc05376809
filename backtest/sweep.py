"""`dhlp sweep`: a grid of strategy parameters, each point an ordinary run folder.

Points are ordinary `runner.run` calls, so a sweep inherits the run folder's guarantees: a folder
that exists is whole (written to a temporary folder, then renamed) and is named by a hash of the
resolved config, data and engine version. Rerunning a sweep, or resuming one that was killed, skips
every point whose folder exists and redoes the rest. Points run serially in this process, in a pool
of spawned processes, or on a Dask cluster; each point's result is a pure function of its config,
so every executor gives the same table.

Outputs: the run folders under `out` (queried by `dhlp sql`), and the sweep folder
`<out>/../sweeps/<strategy name>-<hash>/` (`reports/sweeps/...` by default) with `summary.parquet`
(one row per point: the swept values, run_id and metrics), `sweep.json` (the strategy, paths file,
grid and run_ids) and the heatmaps drawn by `heatmap`. The hash covers the grid and the points'
run_ids, so the same sweep of the same data lands in the same folder.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numba
import numpy as np
import polars as pl

from backtest import runner
from backtest.config import Strategy, apply_overrides, load_strategy
from backtest.errors import InputError
from backtest.results.summary import distribution

EXECUTORS = ("local", "dask")
# Summary columns that identify a row rather than measure it; dropped from single-path points.
ID_COLUMNS = ("run_id", "strategy", "path_id")
DPI = 110


@dataclass(frozen=True)
class PointResult:
    """One finished point, as `on_point` sees it: `reused` if its run folder already existed."""

    index: int
    params: dict[str, Any]
    run_id: str
    reused: bool
    summary: pl.DataFrame


@dataclass
class SweepResult:
    """The sweep table (one row per point, in grid order) and the folder it was written to."""

    sweep_id: str
    path: Path
    grid: dict[str, list[Any]]
    frame: pl.DataFrame
    points: list[PointResult]

    @property
    def n_reused(self) -> int:
        return sum(p.reused for p in self.points)


def run_point(
    strategy: Path | Strategy,
    params: dict[str, Any],
    market: Path | None,
    out: Path,
    keep: str,
    numba_threads: int | None,
) -> tuple[str, bool, pl.DataFrame]:
    """One point, in whichever process runs it; returns (run_id, reused, summary rows).

    Top level and plain arguments, so process pools and Dask can ship it. Points that run side by
    side get one numba thread each: the runner's threads over paths would otherwise start a thread
    per core in every worker. The setting is per thread, so it is made here, in the thread that
    runs the kernel (a Dask task does not run in its worker's main thread).
    """
    if numba_threads is not None:
        numba.set_num_threads(numba_threads)
    overrides = {key.replace(".", "__"): value for key, value in params.items()}
    run = runner.run(strategy, market=market, out=out, keep=keep, **overrides)
    return run.run_id, run.reused, run.summary


def sweep(
    strategy: str | Path | Strategy,
    grid: dict[str, list[Any]],
    *,
    paths: Path | None = None,
    out: Path = runner.DEFAULT_OUT,
    executor: str = "local",
    scheduler: str | None = None,
    jobs: int = 2,
    keep: str = "all",
    on_point: Callable[[PointResult, int, int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> SweepResult:
    """Run every point of the Cartesian product of `grid` (dotted keys -> values).

    Every point is validated before any runs, so a typo costs nothing. `paths` is a (multi-path)
    market file used by every point. `executor="local"` with `jobs=1` runs in this process;
    otherwise up to `jobs` points run at once, in spawned processes or on a Dask cluster
    (`scheduler` address, or a LocalCluster of `jobs` workers when None). `keep` is passed to
    every run ("summary" skips the detail tables of many-path points). `on_point(point, done,
    total)` is called in this process as points finish, in completion order; `on_start(total)`
    once every point is validated, before the first runs.
    """
    if executor not in EXECUTORS:
        raise InputError(f"sweep: executor: {executor!r} is not one of {', '.join(EXECUTORS)}")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise InputError(f"sweep: jobs: must be an integer >= 1 (got {jobs!r})")
    if scheduler is not None and executor != "dask":
        raise InputError("sweep: scheduler: only used with executor 'dask'")
    if paths is not None:
        paths = Path(paths).resolve()
        if not paths.exists():
            raise InputError(f"sweep: paths: file not found: {paths}")
    if not isinstance(strategy, Strategy):
        strategy = runner.strategy_path(strategy)  # absolute: workers may not share the cwd
    base = strategy if isinstance(strategy, Strategy) else load_strategy(strategy)
    grid = resolve_grid(base, grid)
    points = _product(grid)
    out = Path(out).resolve()
    parallel = executor == "dask" or jobs > 1
    threads = 1 if parallel else None
    calls = [(strategy, params, paths, out, keep, threads) for params in points]
    if on_start is not None:
        on_start(len(points))

    finished: list[PointResult | None] = [None] * len(points)

    def done(index: int, result: tuple[str, bool, pl.DataFrame]) -> None:
        point = PointResult(index, points[index], *result)
        finished[index] = point
        if on_point is not None:
            on_point(point, sum(p is not None for p in finished), len(points))

    if not parallel:
        for index, args in enumerate(calls):
            done(index, run_point(*args))
    elif executor == "local":
        _run_local(calls, min(jobs, len(calls)), done)
    else:
        _run_dask(calls, scheduler, min(jobs, len(calls)), done)
    results = [p for p in finished if p is not None]
    source = {"strategy": str(strategy) if isinstance(strategy, Path) else base.name}
    source["paths"] = None if paths is None else str(paths)
    return _write(base.name, grid, results, out.parent / "sweeps", source)


def resolve_grid(base: Strategy, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """The grid with every value as the strategy holds it (`1` for a float key becomes `1.0`), so
    result columns have one type and two spellings of one value are caught as a repeat. Every
    combination is validated too, in case keys constrain each other."""
    resolved: dict[str, list[Any]] = {}
    for key, values in grid.items():
        if not isinstance(values, list | tuple) or not values:
            raise InputError(f"sweep: {key}: needs a list of one or more values (got {values!r})")
        held = [_get(apply_overrides(base, {key: v}, "sweep"), key) for v in values]
        for i, value in enumerate(held):
            if value in held[:i]:
                raise InputError(f"sweep: {key}: value {values[i]!r} repeats {value!r}")
        resolved[key] = held
    for point in _product(resolved):
        apply_overrides(base, point, "sweep")
    return resolved


def _get(strategy: Strategy, key: str) -> Any:
    return functools.reduce(getattr, key.split("."), strategy)


def _product(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    return [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())]


def _run_local(calls: list[tuple], jobs: int, done: Callable[[int, Any], None]) -> None:
    """A pool of spawned processes: forking a parent that has started numba or polars threads
    can deadlock the child."""
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"))
    try:
        futures = {pool.submit(run_point, *args): index for index, args in enumerate(calls)}
        for future in as_completed(futures):
            done(futures[future], future.result())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _run_dask(
    calls: list[tuple], scheduler: str | None, jobs: int, done: Callable[[int, Any], None]
) -> None:
    try:
        from dask.distributed import Client, LocalCluster
        from dask.distributed import as_completed as dask_completed
    except ImportError:
        raise InputError(
            "sweep: executor 'dask' needs dask[distributed]: pip install 'dhlp[dask]'"
        ) from None
    with ExitStack() as stack:
        if scheduler is None:
            cluster = LocalCluster(
                n_workers=jobs,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
            )
            client = stack.enter_context(Client(stack.enter_context(cluster)))
        else:
            try:
                client = stack.enter_context(Client(scheduler))
            except OSError as exc:
                raise InputError(f"sweep: scheduler: cannot reach {scheduler}: {exc}") from None
        futures = [client.submit(run_point, *args, pure=False) for args in calls]
        index = {future.key: i for i, future in enumerate(futures)}
        try:
            for future in dask_completed(futures):
                done(index[future.key], future.result())
        finally:
            client.cancel(futures)


def point_metrics(summary: pl.DataFrame) -> dict[str, Any]:
    """A multi-path point is described by its across-path distribution, a single path by its own
    summary row."""
    if summary.height > 1:
        return distribution(summary)
    return summary.drop(ID_COLUMNS, strict=False).row(0, named=True)


def _write(
    name: str,
    grid: dict[str, list[Any]],
    points: list[PointResult],
    root: Path,
    source: dict[str, str | None],
) -> SweepResult:
    rows = [{**p.params, "run_id": p.run_id, **point_metrics(p.summary)} for p in points]
    frame = pl.from_dicts(rows, infer_schema_length=None)
    run_ids = [p.run_id for p in points]
    key = json.dumps({"grid": grid, "run_ids": run_ids})
    sweep_id = f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"
    folder = root / sweep_id
    folder.mkdir(parents=True, exist_ok=True)
    doc = {"sweep_id": sweep_id, **source, "grid": grid, "run_ids": run_ids}
    _replace(folder / "sweep.json", lambda p: p.write_text(json.dumps(doc, indent=2) + "\n"))
    _replace(folder / "summary.parquet", frame.write_parquet)
    return SweepResult(sweep_id, folder, grid, frame, points)


def _replace(path: Path, write: Callable[[Path], Any]) -> None:
    """Write beside, then rename: a reader never sees half a file."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    write(partial)
    os.replace(partial, path)


def heatmap(
    result: SweepResult,
    metric: str | None = None,
    x: str | None = None,
    y: str | None = None,
    path: Path | None = None,
) -> Path:
    """A PNG of `metric` over two swept parameters (default: the first two; a one-key sweep gives
    one row). Cells average over any other swept parameters, and the title says so.

    `metric` defaults to the mean LP return of multi-path points, else the LP return.
    """
    frame = result.frame
    if metric is None:
        metric = "lp_return_mean" if "lp_return_mean" in frame.columns else "lp_return"
    if metric not in frame.columns or not frame.schema[metric].is_numeric():
        numeric = [
            c for c in frame.columns if frame.schema[c].is_numeric() and c not in result.grid
        ]
        raise InputError(f"heatmap: metric: {metric!r} is not one of {', '.join(numeric)}")
    keys = list(result.grid)
    x = keys[0] if x is None else x
    y = (keys[1] if len(keys) > 1 else None) if y is None else y
    for axis, key in (("x", x), ("y", y)):
        if key is not None and key not in result.grid:
            raise InputError(f"heatmap: {axis}: {key!r} is not a swept key ({', '.join(keys)})")
    if x == y:
        raise InputError(f"heatmap: x and y are both {x!r}")
    x_values = result.grid[x]
    y_values = result.grid[y] if y is not None else [None]
    cells = np.zeros((len(y_values), len(x_values)))
    counts = np.zeros_like(cells)
    columns = (pl.col(x), pl.col(y) if y is not None else pl.lit(None), pl.col(metric))
    for xv, yv, value in frame.select(c.alias(str(k)) for k, c in enumerate(columns)).rows():
        if value is not None:
            i, j = y_values.index(yv), x_values.index(xv)
            cells[i, j] += value
            counts[i, j] += 1
    grid = np.where(counts > 0, cells / np.maximum(counts, 1), np.nan)

    # imported here: every spawned worker imports this module to run a point, and matplotlib
    # would add 0.2 s to each
    from matplotlib.figure import Figure

    fig = Figure(
        figsize=(1.6 + 1.1 * len(x_values), 1.4 + 0.6 * len(y_values)), layout="constrained"
    )
    ax = fig.subplots()
    image = ax.imshow(grid, cmap="viridis", origin="lower", aspect="auto")
    fig.colorbar(image, ax=ax, label=metric)
    ax.set_xticks(range(len(x_values)), [_label(v) for v in x_values])
    ax.set_xlabel(x)
    if y is None:
        ax.set_yticks([])
    else:
        ax.set_yticks(range(len(y_values)), [_label(v) for v in y_values])
        ax.set_ylabel(y)
    others = [k for k in keys if k not in (x, y)]
    note = f" (mean over {', '.join(others)})" if others else ""
    ax.set_title(f"{metric}{note}\n{result.sweep_id}", fontsize=10)
    finite = grid[np.isfinite(grid)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for (i, j), value in np.ndenumerate(grid):
        text = "n/a" if math.isnan(value) else f"{value:.4g}"
        colour = "black" if not math.isnan(value) and value > middle else "white"
        ax.text(j, i, text, ha="center", va="center", color=colour, fontsize=9)
    if path is None:
        name = "-".join(k for k in ("heatmap", metric, x, y) if k is not None)
        path = result.path / f"{name}.png"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _replace(path, lambda p: fig.savefig(p, format="png", dpi=DPI, metadata={"Software": None}))
    return path


def _label(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)
