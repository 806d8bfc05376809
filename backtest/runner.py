"""`backtest.run`: strategy + data in, a complete run folder out (the API behind `dhlp run`)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numba
import numpy as np
import polars as pl

import backtest
from backtest import bundled, threads
from backtest.config import (
    Strategy,
    apply_overrides,
    build_strategy,
    load_strategy,
    parse_end,
    parse_time,
)
from backtest.errors import InputError, did_you_mean
from backtest.inputs.batch import Batch
from backtest.inputs.flow import load_flow, validate_flow
from backtest.inputs.lending import PROCESS, check_covers, load_utilisation, validate_utilisation
from backtest.inputs.lp import load_lp_flows, validate_lp_flows
from backtest.inputs.market import load_market, market_from_frames, validate_market
from backtest.inputs.surface import Surface, load_surface
from backtest.kernel import CACHE_DIR
from backtest.kernel.types import (
    CLOSE_DTYPE,
    HEDGE_DTYPE,
    LP_DTYPE,
    RECORD_KINDS,
    SERIES_DTYPE,
    STEP_DTYPE,
    TRADE_DTYPE,
    FlowRows,
    KernelOutput,
    LpRows,
    MarketPath,
    Records,
    SeriesSpec,
    SurfaceGrid,
)
from backtest.paths import run_paths
from backtest.plan import Plan
from backtest.results import runfolder, tables
from backtest.results.summary import summarise
from backtest.results.tables import Tables

DEFAULT_STRATEGY = bundled.strategies() / "default.toml"
DEFAULT_OUT = Path("reports") / "runs"
ENGINE_VERSION = f"{backtest.__version__}+{CACHE_DIR.name}"


class _Table:
    """A run table read from the folder on first use, then kept on the instance."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, run: Run, owner: type | None = None) -> pl.DataFrame:
        frame = runfolder.read_table(run.path, self.name)
        run.__dict__[self.name] = frame  # shadows the descriptor from now on
        return frame


class Run:
    """A finished run folder. The summary is read at once; the detail tables when first used,
    so opening a run of 10,000 paths does not load every tick."""

    steps = _Table()
    trades = _Table()
    hedges = _Table()
    series = _Table()
    liquidations = _Table()
    lp = _Table()

    def __init__(self, path: Path, reused: bool = False) -> None:
        self.path = path
        self.run_id = path.name
        self.reused = reused
        self.summary = runfolder.read_table(path, "summary")


def resolve_data_path(
    value: str, strategy_file: Path | None, key: str, section: str = "data"
) -> Path:
    """Relative paths are tried beside the strategy file, then its parent (the project root for
    `strategies/*.toml`), then the working directory."""
    path = Path(value)
    if path.is_absolute():
        candidates = [path]
    else:
        bases = [strategy_file.parent, strategy_file.parent.parent] if strategy_file else []
        candidates = [b / path for b in bases] + [Path.cwd() / path]
    for candidate in candidates:
        if candidate.exists():
            return candidate.resolve()
    raise InputError(f"[{section}] {key}: file not found: {value}")


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    for f in files:
        digest.update(f.name.encode())
        digest.update(f.read_bytes())
    return digest.hexdigest()


def strategy_path(strategy: str | Path) -> Path:
    """A strategy file by path or, if no such file, by the name of a bundled one ("unhedged")."""
    path = Path(strategy)
    if path.exists() or path.parent != Path("."):
        return path.resolve()
    names = sorted(p.stem for p in bundled.strategies().glob("*.toml"))
    if path.stem not in names:
        raise InputError(
            f"{strategy}: no such strategy file or bundled strategy{did_you_mean(path.stem, names)}"
            " (`dhlp strategies` lists the bundled ones)"
        )
    return bundled.strategies() / f"{path.stem}.toml"


def prepare(
    strategy: str | Path | Strategy | None = None,
    *,
    market: str | Path | None = None,
    flow: str | Path | None = None,
    seed: int | None = None,
    run_id: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> Plan:
    """Everything a run needs, validated; raises InputError before anything is written."""
    strategy_file: Path | None = None
    if strategy is None:
        strategy = DEFAULT_STRATEGY
    if not isinstance(strategy, Strategy):
        strategy_file = strategy_path(strategy)
        strategy = load_strategy(strategy_file)
    changes: dict[str, Any] = {}
    if market is not None:  # another market file: the strategy's window need not fit it
        changes |= {
            "data.market": str(Path(market).resolve()),
            "data.start": None,
            "data.end": None,
        }
    changes |= overrides or {}
    if flow is not None:
        changes["data.flow"] = str(flow) if str(flow) == "synthetic" else str(Path(flow).resolve())
    if seed is not None:
        changes["flow.seed"] = seed
    if changes:
        strategy = apply_overrides(strategy, changes, "override")

    data = strategy.data
    market_path = resolve_data_path(data.market, strategy_file, "market")
    start = parse_time(data.start) if data.start else None
    end = parse_end(data.end) if data.end else None
    if start and end and end <= start:
        raise InputError(f"[data] end: {data.end} is not after start {data.start}")
    mkt = load_market(market_path, start, end, default_rate=strategy.pricing.rate)
    if data.flow == "synthetic":
        flow_frame, flow_hash = None, "synthetic"
    else:
        flow_path = resolve_data_path(data.flow, strategy_file, "flow")
        flow_frame, flow_hash = load_flow(flow_path), file_digest(flow_path)
    surface, surface_hash = None, None
    if data.surface:
        surface_path = resolve_data_path(data.surface, strategy_file, "surface")
        surface, surface_hash = load_surface(surface_path), file_digest(surface_path)
    lp_flows, lp_hash = None, None
    if strategy.lp.flows:
        lp_path = resolve_data_path(strategy.lp.flows, strategy_file, "flows", section="lp")
        lp_flows, lp_hash = load_lp_flows(lp_path), file_digest(lp_path)
    utilisation = None
    run_facts = {
        "engine_version": ENGINE_VERSION,
        "market_sha256": file_digest(market_path),
        "flow_sha256": flow_hash,
        "surface_sha256": surface_hash,
        "lp_flows_sha256": lp_hash,
        "seed": strategy.flow.seed,
    }
    lend = strategy.lending
    if lend.share > 0.0 and lend.utilisation != PROCESS:  # only then: baselines' facts stay
        util_path = resolve_data_path(
            lend.utilisation, strategy_file, "utilisation", section="lending"
        )
        utilisation = load_utilisation(util_path)
        check_covers(utilisation, mkt, util_path)
        run_facts["utilisation_sha256"] = file_digest(util_path)
    if run_id is None:
        key = {**strategy.model_dump(mode="json"), "data": None, **run_facts}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
        run_id = f"{strategy.name}-{digest[:10]}"
    run_facts |= {"market_file": str(market_path), "run_id": run_id}
    end_ns = int(end.timestamp() * 1e9) if end else None
    return Plan(
        strategy,
        mkt,
        flow_frame,
        end_ns,
        run_id,
        {"strategy": strategy.model_dump(mode="json"), "run": run_facts},
        surface,
        lp_flows,
        utilisation,
    )


def record_room(batch: Batch) -> np.ndarray:
    """Variable-length records to allocate per path and kind (types.RECORD_KINDS), a guess: a
    hedge per tick with a fill or per 16 ticks, a few closes, a few rows per LP row. A path that
    needs more is rerun with exactly what it needed."""
    ticks = np.diff(batch.market.offsets)
    flow = np.diff(batch.aligned.offsets)
    n_lp = len(batch.lp_flows[1])
    hedges = np.minimum(ticks, flow) + ticks // 16 + 4 * n_lp + 16
    return np.stack([hedges, ticks // 64 + 4 * n_lp + 16, 2 * n_lp + ticks // 256 + 8], axis=1)


def simulate(batch: Batch) -> KernelOutput:
    """Run the kernel over every path of a batch (in parallel across paths)."""
    mkt, fl = batch.market, batch.aligned
    n_ticks, n_flow, n_paths = len(mkt.ts), len(fl.tick), mkt.n_paths
    surf = batch.surface
    room = record_room(batch)
    while True:
        offsets = np.zeros((n_paths + 1, len(RECORD_KINDS)), np.int64)
        offsets[1:] = np.cumsum(room, axis=0)
        out = Records(
            steps=np.zeros(n_ticks, STEP_DTYPE),
            trades=np.zeros(n_flow, TRADE_DTYPE),
            hedges=np.zeros(offsets[-1, 0], HEDGE_DTYPE),
            series=np.zeros((n_paths, len(fl.series_expiry)), SERIES_DTYPE),
            closes=np.zeros(offsets[-1, 1], CLOSE_DTYPE),
            lp=np.zeros(offsets[-1, 2], LP_DTYPE),
        )
        counts = np.zeros((n_paths, len(RECORD_KINDS)), np.int64)
        args = (
            MarketPath(
                mkt.ts,
                mkt.spot,
                mkt.iv,
                mkt.rate,
                mkt.funding,
                surf.snapshot_at(mkt.ts),
                batch.utilisation,
                batch.utilisation_pin,
                batch.oracle,
                batch.delays,
            ),
            mkt.offsets,
            SeriesSpec(
                fl.series_expiry,
                fl.series_strike,
                fl.series_kind,
                fl.series_expiry_id,
                fl.series_strike_id,
            ),
            SurfaceGrid(surf.tenors, surf.log_moneyness, surf.vols),
            FlowRows(fl.tick, fl.series, fl.side, fl.size, fl.informed, fl.u, fl.stale),
            fl.offsets,
            batch.listed,
            LpRows(*batch.lp_flows),
            batch.params,
            out,
            offsets,
            counts,
        )
        in_parallel(n_paths, run_paths, args)
        if (counts <= room).all():
            return KernelOutput(out, offsets, counts)
        room = np.maximum(room, counts)


def in_parallel(n_paths: int, kernel: Callable[..., None], args: tuple) -> None:
    """kernel(first, last, *args) over paths [0, n_paths) on numba's thread count for this
    thread (numba.set_num_threads: one per sweep worker), a path at a time from a shared queue,
    so a thread that drew cheap paths takes more. The kernel releases the GIL."""
    workers = min(numba.get_num_threads(), n_paths)
    if workers <= 1:
        kernel(0, n_paths, *args)
        return
    list(threads.pool("paths", workers).map(lambda k: kernel(k, k + 1, *args), range(n_paths)))


def run_batches(
    plan: Plan, on_batch: Callable[[int, int], None] | None = None
) -> Iterator[tuple[pl.DataFrame, Tables]]:
    """(summary, tables) of each batch of paths, in path order. `on_batch(done, total)`, in
    paths, is called before the first batch (done = 0: the kernel starts) and after each.

    The kernel runs here, without the GIL; a batch's tables and summary are built in a
    background thread while the kernel runs the next batch (and plan.batches prepares the one
    after), so a many-path run keeps both cores busy. Each batch's results are its own: the
    order they are built in cannot change them."""

    def finish(batch: Batch, out: KernelOutput) -> tuple[pl.DataFrame, Tables]:
        built = tables.build(batch, out)
        return summarise(batch, built), built

    done = 0
    if on_batch is not None:
        on_batch(0, plan.market.n_paths)  # the kernel starts: it may compile now
    behind = threads.pool("finish", 1)
    submitted = (
        (batch.market.n_paths, behind.submit(finish, batch, simulate(batch)))
        for batch in plan.batches()
    )
    for n_paths, result in _one_behind(submitted):
        done += n_paths
        if on_batch is not None:
            on_batch(done, plan.market.n_paths)
        yield result.result()


def _one_behind(items: Iterator[Any]) -> Iterator[Any]:
    """Each item once the next one has been produced (so work on the next is under way)."""
    previous: list[Any] = []
    for item in items:
        yield from previous
        previous = [item]
    yield from previous


def run(
    strategy: str | Path | Strategy | None = None,
    *,
    market: str | Path | None = None,
    flow: str | Path | None = None,
    out: str | Path | None = None,
    run_id: str | None = None,
    seed: int | None = None,
    force: bool = False,
    keep: str = "all",
    report: bool = False,
    on_batch: Callable[[int, int], None] | None = None,
    **overrides: Any,
) -> Run:
    """Run a strategy; overrides are `section__key=value` (e.g. `hedge__threshold=0.05`).

    An identical earlier run (same run_id) is reused unless `force`. `keep="summary"` writes
    only the per-path summaries (for very many paths); "all" writes every table. `report`
    adds plots and report.html (what `dhlp run` does unless --no-report).
    """
    if keep not in ("all", "summary"):
        raise InputError(f"keep: expected 'all' or 'summary', got {keep!r}")
    dotted = {k.replace("__", "."): v for k, v in overrides.items()}
    prep = prepare(strategy, market=market, flow=flow, seed=seed, run_id=run_id, overrides=dotted)
    out_root = Path(out) if out is not None else DEFAULT_OUT
    final = out_root / prep.run_id
    has_tables = (final / "steps.parquet").exists() or keep == "summary"
    if final.exists() and has_tables and not force:  # a summary-only run does not serve "all"
        if report and not (final / "report.html").exists():
            from backtest.results.report import build_report  # matplotlib: 0.2 s of start-up

            build_report(final)
        return Run(final, reused=True)
    keep_tables = keep == "all"
    with runfolder.RunFolderWriter(final, prep.resolved, keep_tables, report) as writer:
        for summary, built in run_batches(prep, on_batch):
            writer.add(summary, built)
    return Run(final)


def simulate_frames(
    strategy: Strategy | dict[str, Any],
    market: pl.DataFrame,
    flow: pl.DataFrame | None = None,
    *,
    lp_flows: pl.DataFrame | None = None,
    surface: Surface | None = None,
    utilisation: pl.DataFrame | None = None,
) -> tuple[Tables, pl.DataFrame]:
    """Run in memory on polars frames (market/flow/LP-flow/utilisation schemas of
    docs/design.md) and an optional loaded surface; nothing is written. Returns the run tables
    and the summary. A utilisation frame serves [lending] in place of its `utilisation` key."""
    if not isinstance(strategy, Strategy):
        strategy = build_strategy(strategy, "strategy")
    mkt = market_from_frames([validate_market(market, "market", strategy.pricing.rate)], "market")
    flow_frame = None if flow is None else validate_flow(flow, "flow")
    lp_frame = None if lp_flows is None else validate_lp_flows(lp_flows, "lp flows")
    util_frame = None
    if utilisation is not None:
        util_frame = validate_utilisation(utilisation, "utilisation")
        check_covers(util_frame, mkt, "utilisation")
    plan = Plan(
        strategy, mkt, flow_frame, surface=surface, lp_flows=lp_frame, utilisation=util_frame
    )
    batch = plan.whole()
    built = tables.build(batch, simulate(batch))
    return built, summarise(batch, built)
