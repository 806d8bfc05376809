"""A validated run plan, cut into batches of paths so memory stays bounded however many paths.

The plan holds the market and the flow source; a batch holds what the kernel needs for a few
paths: their ticks, their flow (generated here when synthetic) aligned to their ticks, their LP
flows. A batch quacks like the whole run for the results layer (strategy, run_id, market, ...).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from backtest.config import Strategy, parse_duration
from backtest.inputs.flow import ALL_PATHS, AlignedFlow, align_flow, validate_flow
from backtest.inputs.lp import align_lp_flows, no_lp_flows
from backtest.inputs.market import Market
from backtest.inputs.surface import Surface, no_surface
from backtest.inputs.synthetic_flow import generate_flow
from backtest.kernel.types import (
    COLLATERAL,
    INSTRUMENT,
    POLICY,
    REBALANCE,
    SLIPPAGE,
    Params,
)

PATHS_PER_BATCH = 64


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


def synthetic_flow(strategy: Strategy, market: Market) -> pl.DataFrame:
    """One seeded, validated flow per path; in a multi-path market each path's seed derives from
    the strategy's seed and its path_id, so a path's flow (and its flow_row numbers) does not
    depend on which batch it is in."""
    frames = []
    for k, pid in enumerate(market.path_ids):
        cfg = strategy.flow
        if market.multi_path:
            seed = np.random.SeedSequence([cfg.seed, int(pid)]).generate_state(1)[0]
            cfg = cfg.model_copy(update={"seed": int(seed)})
        sl = market.path(k)
        frame = generate_flow(
            market.ts[sl], market.spot[sl], market.iv[sl], cfg, rate=strategy.pricing.rate
        )
        if market.multi_path:
            frame = frame.with_columns(path_id=pl.lit(int(pid), pl.Int64))
        frames.append(validate_flow(frame, "synthetic flow"))
    return pl.concat(frames, how="diagonal_relaxed").sort("ts", maintain_order=True)


@dataclass
class Batch:
    """What the kernel and the results layer need for some of a plan's paths."""

    strategy: Strategy
    params: Params
    run_id: str
    surface: Surface
    market: Market
    flow: pl.DataFrame
    aligned: AlignedFlow
    lp_flows: tuple[np.ndarray, np.ndarray]  # (tick per path and row, amount)


@dataclass
class Plan:
    """A validated run: strategy, market, flow (None = synthetic), surface, LP flows."""

    strategy: Strategy
    market: Market
    flow: pl.DataFrame | None = None
    end_ns: int | None = None
    run_id: str = "in-memory"
    resolved: dict[str, Any] = field(default_factory=dict)
    surface: Surface | None = None
    lp_flows: pl.DataFrame | None = None

    def __post_init__(self) -> None:
        self.params = params_from(self.strategy)
        self.surface = self.surface or no_surface()
        self.lp_flows = no_lp_flows() if self.lp_flows is None else self.lp_flows
        if self.end_ns is not None:
            self.lp_flows = self.lp_flows.filter(pl.col("ts") < self.end_ns)
        if not self.resolved:
            self.resolved = {"strategy": self.strategy.model_dump(mode="json"), "run": {}}

    def batch(self, first: int, last: int) -> Batch:
        market = self.market.subset(first, last)
        if self.flow is None:
            flow = synthetic_flow(self.strategy, market)
        else:
            ids = [ALL_PATHS, *market.path_ids.tolist()]
            flow = self.flow.filter(pl.col("path_id").is_in(ids))
        return Batch(
            strategy=self.strategy,
            params=self.params,
            run_id=self.run_id,
            surface=self.surface,
            market=market,
            flow=flow,
            aligned=align_flow(flow, market, self.end_ns),
            lp_flows=align_lp_flows(self.lp_flows, market),
        )

    def batches(self, size: int = PATHS_PER_BATCH) -> Iterator[Batch]:
        for first in range(0, self.market.n_paths, size):
            yield self.batch(first, min(first + size, self.market.n_paths))

    def whole(self) -> Batch:
        return self.batch(0, self.market.n_paths)
