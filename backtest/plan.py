"""A validated run plan, cut into batches of paths so memory stays bounded however many paths.

The plan holds the market and the flow source; each batch (`inputs.batch.Batch`) gets its paths'
ticks, their flow (generated here when synthetic) aligned to their ticks, and their LP flows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from backtest import threads
from backtest.config import OracleConfig, Strategy, parse_duration
from backtest.errors import InputError
from backtest.inputs import streams
from backtest.inputs.batch import Batch
from backtest.inputs.flow import ALL_PATHS, align_flow, validate_flow
from backtest.inputs.lending import utilisation_for
from backtest.inputs.listed import with_listed
from backtest.inputs.lp import align_lp_flows, no_lp_flows
from backtest.inputs.market import Market
from backtest.inputs.surface import Surface, no_surface
from backtest.inputs.synthetic_flow import generate_flow
from backtest.kernel.types import (
    COLLATERAL,
    INSTRUMENT,
    MEV,
    POLICY,
    REBALANCE,
    SLIPPAGE,
    SUBMISSION,
    VEGA_POLICY,
    Params,
)

PATHS_PER_BATCH = 64
NS_PER_HOUR = 3_600_000_000_000
NS_PER_SECOND = 1_000_000_000


# Strategy keys whose kernel parameter is a code or another unit than the file's.
CONVERSIONS: dict[tuple[str, str], Callable[[Any], Any]] = {
    ("pool", "collateral"): COLLATERAL.__getitem__,
    ("hedge", "policy"): POLICY.__getitem__,
    ("hedge", "rebalance_to"): REBALANCE.__getitem__,
    ("hedge", "instrument"): INSTRUMENT.__getitem__,
    ("hedge", "interval"): lambda text: parse_duration(text) * NS_PER_SECOND,
    ("slippage", "model"): SLIPPAGE.__getitem__,
    ("mev", "model"): MEV.__getitem__,
    ("mev", "submission"): SUBMISSION.__getitem__,
    ("lp", "withdrawal_delay"): lambda hours: int(hours * 3600 * NS_PER_SECOND),
    ("lp", "yield_window_days"): lambda days: int(days * 86_400 * NS_PER_SECOND),
    ("vega_hedge", "policy"): VEGA_POLICY.__getitem__,
    ("vega_hedge", "tenor_days"): lambda days: int(days * 86_400 * NS_PER_SECOND),
}


def params_from(strategy: Strategy) -> Params:
    """The kernel's parameters: each group takes its fields by name from the strategy section
    of the same name, so a key is declared once in the config and once in its group."""
    groups = {}
    for section, group in Params.__annotations__.items():
        values = getattr(strategy, section)
        groups[section] = group(
            **{
                name: CONVERSIONS.get((section, name), lambda v: v)(getattr(values, name))
                for name in group._fields
            }
        )
    return Params(**groups)


def hedge_delays(random_delay: int, market: Market, seed: int) -> np.ndarray:
    """[mev] random_delay: the extra ticks a hedge decided at each tick waits, uniform in
    0..random_delay, seeded by (seed, path_id) so a path's delays depend on nothing else; empty
    when off."""
    if random_delay == 0:
        return np.zeros(0, np.int64)
    parts = []
    for k, pid in enumerate(market.path_ids):
        n = market.path(k).stop - market.path(k).start
        rng = streams.path_rng(seed, int(pid), streams.HEDGE_DELAY)
        parts.append(rng.integers(0, random_delay + 1, n))
    return np.concatenate(parts).astype(np.int64)


def oracle_for(cfg: OracleConfig, market: Market) -> np.ndarray:
    """The oracle's price over a batch's ticks, path after path; empty without one."""
    if cfg.model == "none":
        return np.zeros(0)
    from backtest.kernel.oracle import push_oracle  # numba: only for a run that has an oracle

    return push_oracle(
        market.ts,
        market.spot,
        market.offsets,
        np.int64(round(cfg.lag * NS_PER_HOUR)),
        cfg.deviation,
        np.int64(round(cfg.heartbeat * NS_PER_HOUR)),
    )


def check_oracle(cfg: OracleConfig, market: Market) -> None:
    """An oracle that never prints after its first price while the market moves (a lag longer
    than the data, a deviation the market never reaches with no heartbeat) would have the pool
    quote one price for the whole run: refused before anything runs."""
    prints = oracle_for(cfg, market)
    for k, pid in enumerate(market.path_ids if len(prints) else []):
        ticks = market.path(k)
        if np.ptp(prints[ticks]) == 0.0 and np.ptp(market.spot[ticks]) > 0.0:
            raise InputError(
                f"[oracle]: on path {pid} the oracle never prints after its first price while "
                f"the market moves (lag {cfg.lag:g} h, deviation {cfg.deviation:g}, heartbeat "
                f"{cfg.heartbeat:g} h): the pool would quote one price for the whole run"
            )


def synthetic_flow(strategy: Strategy, market: Market) -> pl.DataFrame:
    """One seeded, validated flow per path; in a multi-path market each path's seed derives from
    the strategy's seed and its path_id, so a path's flow (and its flow_row numbers) does not
    depend on which batch it is in. The paths' flows are validated as one frame (per path, the
    checks' fixed cost was a fifth of a many-path run), flow_row counted within each path."""
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
        frames.append(frame)
    flow = validate_flow(pl.concat(frames, how="diagonal_relaxed"), "synthetic flow")
    first_row = pl.col("flow_row").min().over("path_id")
    return flow.with_columns(pl.col("flow_row") - first_row)


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
    utilisation: pl.DataFrame | None = None  # [lending] utilisation from a file (None: process)

    def __post_init__(self) -> None:
        check_oracle(self.strategy.oracle, self.market)
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
        cfg = self.strategy.flow
        aligned = align_flow(flow, market, self.end_ns, cfg.seed, cfg.stale_fraction)
        aligned, listed = with_listed(aligned, market, self.strategy)
        demand, pin = utilisation_for(
            self.strategy.lending, market, self.utilisation, self.strategy.flow.seed
        )
        return Batch(
            strategy=self.strategy,
            params=self.params,
            run_id=self.run_id,
            surface=self.surface,
            market=market,
            flow=flow,
            aligned=aligned,
            lp_flows=align_lp_flows(self.lp_flows, market),
            listed=listed,
            oracle=oracle_for(self.strategy.oracle, market),
            delays=hedge_delays(self.strategy.mev.random_delay, market, self.strategy.flow.seed),
            utilisation=demand,
            utilisation_pin=pin,
        )

    def batches(self, size: int = PATHS_PER_BATCH) -> Iterator[Batch]:
        """The batches in path order. The next one is prepared (flow generated and aligned) in
        a background thread while the caller runs this one: the kernel releases the GIL, so
        that work overlaps the kernel instead of leaving a core idle between batches."""
        n = self.market.n_paths
        bounds = [(first, min(first + size, n)) for first in range(0, n, size)]
        if not bounds:
            return
        ahead = threads.pool("prepare", 1)
        pending = ahead.submit(self.batch, *bounds[0])
        for following in [*bounds[1:], None]:
            batch = pending.result()
            if following is not None:
                pending = ahead.submit(self.batch, *following)
            yield batch

    def whole(self) -> Batch:
        return self.batch(0, self.market.n_paths)
