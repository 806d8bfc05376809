"""`backtest.run`: strategy + data in, a complete run folder out (the API behind `dhlp run`)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

import backtest
from backtest.config import (
    Strategy,
    apply_overrides,
    build_strategy,
    load_strategy,
    parse_duration,
    parse_end,
    parse_time,
)
from backtest.errors import InputError
from backtest.inputs.flow import AlignedFlow, align_flow, load_flow, validate_flow
from backtest.inputs.lp import align_lp_flows, load_lp_flows, no_lp_flows, validate_lp_flows
from backtest.inputs.market import Market, load_market, market_from_frames, validate_market
from backtest.inputs.surface import Surface, load_surface, no_surface
from backtest.inputs.synthetic_flow import generate_flow
from backtest.kernel import CACHE_DIR
from backtest.kernel.loop import run_paths
from backtest.kernel.types import (
    COLLATERAL,
    HEDGE_DTYPE,
    INSTRUMENT,
    POLICY,
    REBALANCE,
    SERIES_DTYPE,
    SLIPPAGE,
    STEP_DTYPE,
    TRADE_DTYPE,
    Params,
)
from backtest.results import runfolder, tables
from backtest.results.summary import summarise
from backtest.results.tables import Tables

PROJECT_ROOT = Path(backtest.__file__).resolve().parents[1]
DEFAULT_STRATEGY = PROJECT_ROOT / "strategies" / "default.toml"
DEFAULT_OUT = Path("reports") / "runs"
ENGINE_VERSION = f"{backtest.__version__}+{CACHE_DIR.name}"
PATHS_PER_BATCH = 64


@dataclass
class Run:
    """A finished run: its folder and tables."""

    run_id: str
    path: Path
    summary: pl.DataFrame
    steps: pl.DataFrame
    trades: pl.DataFrame
    hedges: pl.DataFrame
    series: pl.DataFrame
    reused: bool = False

    @classmethod
    def load(cls, path: Path, reused: bool = False) -> Run:
        t = runfolder.read_tables(path)
        return cls(run_id=path.name, path=path, reused=reused, **t)


def params_from(strategy: Strategy) -> Params:
    pool, pricing, hedge, slip = strategy.pool, strategy.pricing, strategy.hedge, strategy.slippage
    return Params(
        initial_capital=pool.initial_capital,
        collateral=COLLATERAL[pool.collateral],
        max_utilisation=pool.max_utilisation,
        stress_spot=pool.stress_spot,
        stress_vol=pool.stress_vol,
        margin_multiplier=pool.margin_multiplier,
        liquidation_threshold=pool.liquidation_threshold,
        liquidation_penalty=pool.liquidation_penalty,
        idle_yield=pool.idle_yield,
        base_fee=pricing.base_fee,
        spot_fee=pricing.spot_fee,
        vega_fee=pricing.vega_fee,
        min_fee=pricing.min_fee,
        skew_slope=pricing.skew_slope,
        smile_curvature=pricing.smile_curvature,
        standard_size=pricing.standard_size,
        iv_impact=pricing.iv_impact,
        skew_impact=pricing.skew_impact,
        impact_half_life=pricing.impact_half_life,
        cb_iv_move=pricing.cb_iv_move,
        cb_hours=pricing.cb_hours,
        cb_min_free=pricing.cb_min_free,
        run_drawdown=strategy.lp.run_drawdown,
        run_fraction=strategy.lp.run_fraction,
        withdrawal_delay_ns=int(strategy.lp.withdrawal_delay * 3600 * 1_000_000_000),
        withdrawal_fee=strategy.lp.withdrawal_fee,
        policy=POLICY[hedge.policy],
        threshold=hedge.threshold,
        interval_ns=parse_duration(hedge.interval) * 1_000_000_000,
        rebalance_to=REBALANCE[hedge.rebalance_to],
        instrument=INSTRUMENT[hedge.instrument],
        hedge_cap=hedge.hedge_cap,
        max_notional_per_step=hedge.max_notional_per_step,
        latency=hedge.latency,
        risk_aversion=hedge.risk_aversion,
        slippage=SLIPPAGE[slip.model],
        bps=slip.bps,
        impact_coeff=slip.impact_coeff,
        adv_usd=slip.adv_usd,
        liquidity_usd=slip.liquidity_usd,
        fee_bps=slip.fee_bps,
        gas_usd=slip.gas_usd,
        mev_bps=slip.mev_bps,
        mev_min_notional=slip.mev_min_notional,
    )


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


def synthetic_flow(strategy: Strategy, market: Market) -> pl.DataFrame:
    """One seeded flow per path; a multi-path market gets a distinct seed per path."""
    frames = []
    for k, pid in enumerate(market.path_ids):
        cfg = strategy.flow
        if market.n_paths > 1:
            seed = np.random.SeedSequence([cfg.seed, int(pid)]).generate_state(1)[0]
            cfg = cfg.model_copy(update={"seed": int(seed)})
        sl = market.path(k)
        frame = generate_flow(
            market.ts[sl], market.spot[sl], market.iv[sl], cfg, rate=strategy.pricing.rate
        )
        if market.n_paths > 1:
            frame = frame.with_columns(path_id=pl.lit(int(pid), pl.Int64))
        frames.append(frame)
    return pl.concat(frames, how="diagonal_relaxed").sort("ts", maintain_order=True)


@dataclass
class Prepared:
    strategy: Strategy
    market: Market
    flow: pl.DataFrame
    aligned: AlignedFlow
    params: Params
    run_id: str
    resolved: dict[str, Any]
    surface: Surface
    lp_flows: tuple[np.ndarray, np.ndarray]  # (tick per path and row, amount)


def prepare(
    strategy: str | Path | Strategy | None = None,
    *,
    market: str | Path | None = None,
    flow: str | Path | None = None,
    seed: int | None = None,
    run_id: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> Prepared:
    """Everything a run needs, validated; raises InputError before anything is written."""
    strategy_file: Path | None = None
    if strategy is None:
        strategy = DEFAULT_STRATEGY
    if not isinstance(strategy, Strategy):
        strategy_file = Path(strategy).resolve()
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
    run_facts = {
        "engine_version": ENGINE_VERSION,
        "market_sha256": file_digest(market_path),
        "flow_sha256": flow_hash,
        "surface_sha256": surface_hash,
        "lp_flows_sha256": lp_hash,
        "seed": strategy.flow.seed,
    }
    if run_id is None:
        key = {**strategy.model_dump(mode="json"), "data": None, **run_facts}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
        run_id = f"{strategy.name}-{digest[:10]}"
    run_facts |= {"market_file": str(market_path), "run_id": run_id}
    end_ns = int(end.timestamp() * 1e9) if end else None
    return assemble(
        strategy, mkt, flow_frame, end_ns, run_id, run_facts, surface=surface, lp_flows=lp_flows
    )


def assemble(
    strategy: Strategy,
    market: Market,
    flow: pl.DataFrame | None,
    end_ns: int | None = None,
    run_id: str = "in-memory",
    run_facts: dict[str, Any] | None = None,
    surface: Surface | None = None,
    lp_flows: pl.DataFrame | None = None,
) -> Prepared:
    """Validated market + flow (None = synthetic) -> everything the kernel needs."""
    if flow is None:
        flow = validate_flow(synthetic_flow(strategy, market), "synthetic flow")
    aligned = align_flow(flow, market, end_ns)
    lp_flows = no_lp_flows() if lp_flows is None else lp_flows
    if end_ns is not None:
        lp_flows = lp_flows.filter(pl.col("ts") < end_ns)
    resolved = {"strategy": strategy.model_dump(mode="json"), "run": run_facts or {}}
    return Prepared(
        strategy,
        market,
        flow,
        aligned,
        params_from(strategy),
        run_id,
        resolved,
        surface or no_surface(),
        align_lp_flows(lp_flows, market),
    )


@dataclass
class KernelOutput:
    steps: np.ndarray
    trades: np.ndarray
    hedges: np.ndarray
    n_hedges: np.ndarray
    series: np.ndarray


def simulate(prep: Prepared, on_batch: Callable[[int, int], None] | None = None) -> KernelOutput:
    """Run the kernel over every path, in batches so a progress bar can move between them."""
    mkt, fl = prep.market, prep.aligned
    n_ticks, n_flow, n_paths = len(mkt.ts), len(fl.tick), mkt.n_paths
    steps = np.zeros(n_ticks, STEP_DTYPE)
    trades = np.zeros(n_flow, TRADE_DTYPE)
    hedges = np.zeros(2 * n_ticks, HEDGE_DTYPE)  # room for a policy fill and a liquidation
    series = np.zeros((n_paths, len(fl.series_expiry)), SERIES_DTYPE)
    n_hedges = np.zeros(n_paths, np.int64)
    series_arrays = (
        fl.series_expiry,
        fl.series_strike,
        fl.series_kind,
        fl.series_expiry_id,
        fl.series_strike_id,
    )
    surf = prep.surface
    surface = (surf.tenors, surf.log_moneyness, surf.vols)
    snapshot = surf.snapshot_at(mkt.ts)
    for first in range(0, n_paths, PATHS_PER_BATCH):
        last = min(first + PATHS_PER_BATCH, n_paths)
        a, b = mkt.offsets[first], mkt.offsets[last]
        fa, fb = fl.offsets[first], fl.offsets[last]
        n_hedges[first:last] = run_paths(
            (
                mkt.ts[a:b],
                mkt.spot[a:b],
                mkt.iv[a:b],
                mkt.rate[a:b],
                mkt.funding[a:b],
                snapshot[a:b],
            ),
            mkt.offsets[first : last + 1] - a,
            series_arrays,
            surface,
            (fl.tick[fa:fb], fl.series[fa:fb], fl.side[fa:fb], fl.size[fa:fb]),
            fl.offsets[first : last + 1] - fa,
            (prep.lp_flows[0][first:last], prep.lp_flows[1]),
            prep.params,
            (steps[a:b], trades[fa:fb], hedges[2 * a : 2 * b], series[first:last]),
        )
        if on_batch is not None:
            on_batch(last, n_paths)
    trades["flow_row"] = fl.source_row
    return KernelOutput(steps, trades, hedges, n_hedges, series)


def run(
    strategy: str | Path | Strategy | None = None,
    *,
    market: str | Path | None = None,
    flow: str | Path | None = None,
    out: str | Path | None = None,
    run_id: str | None = None,
    seed: int | None = None,
    force: bool = False,
    on_batch: Callable[[int, int], None] | None = None,
    **overrides: Any,
) -> Run:
    """Run a strategy; overrides are `section__key=value` (e.g. `hedge__threshold=0.05`).

    An identical earlier run (same run_id) is reused unless `force`.
    """
    dotted = {k.replace("__", "."): v for k, v in overrides.items()}
    prep = prepare(strategy, market=market, flow=flow, seed=seed, run_id=run_id, overrides=dotted)
    out_root = Path(out) if out is not None else DEFAULT_OUT
    final = out_root / prep.run_id
    if final.exists() and not force:
        return Run.load(final, reused=True)
    result = simulate(prep, on_batch)
    built = tables.build(prep, result)
    summary = summarise(prep, built)
    runfolder.write(final, prep.resolved, summary, built)
    return Run.load(final)


def simulate_frames(
    strategy: Strategy | dict[str, Any],
    market: pl.DataFrame,
    flow: pl.DataFrame | None = None,
    *,
    lp_flows: pl.DataFrame | None = None,
    surface: Surface | None = None,
) -> tuple[Tables, pl.DataFrame]:
    """Run in memory on polars frames (market/flow/LP-flow schemas of DESIGN.md) and an optional
    loaded surface; nothing is written. Returns the run tables and the summary."""
    if not isinstance(strategy, Strategy):
        strategy = build_strategy(strategy, "strategy")
    mkt = market_from_frames([validate_market(market, "market", strategy.pricing.rate)], "market")
    flow_frame = None if flow is None else validate_flow(flow, "flow")
    lp_frame = None if lp_flows is None else validate_lp_flows(lp_flows, "lp flows")
    prep = assemble(strategy, mkt, flow_frame, surface=surface, lp_flows=lp_frame)
    built = tables.build(prep, simulate(prep))
    return built, summarise(prep, built)
