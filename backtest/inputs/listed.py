"""The listed-option market a vega hedge trades in: at every tick, the at-the-money option of each
expiry the exchange lists (Deribit's calendar, as the synthetic flow uses) within the hedge's
tenor range.

The options are series like the flow's, appended after them, with expiry and strike ids of their
own: the pool's inventory impact moves its quotes for the flow's series, never the exchange's
marks. Which option is at the money at tick t depends on the spot and rate of t only, so the
listing adds no look-ahead even though it is built for the whole path before the run.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl

from backtest.config import Strategy
from backtest.inputs.flow import AlignedFlow
from backtest.inputs.market import Market
from backtest.inputs.synthetic_flow import NS_PER_DAY, NS_PER_YEAR, listed_expiries
from backtest.kernel.types import ListedOptions


def no_listed(aligned: AlignedFlow, n_ticks: int) -> ListedOptions:
    return ListedOptions(
        np.zeros(n_ticks + 1, np.int64), np.zeros(0, np.int64), len(aligned.series_expiry)
    )


def at_the_money(
    ts: np.ndarray, spot: np.ndarray, rate: np.ndarray, strategy: Strategy
) -> pl.DataFrame:
    """(tick, expiry, strike, kind) of every listed expiry's at-the-money option at every tick:
    the strike on the grid nearest the forward, a call at or above it, a put below."""
    cfg = strategy.vega_hedge
    step = cfg.strike_step or strategy.flow.strike_step
    low, high = int(cfg.min_tenor_days * NS_PER_DAY), int(cfg.max_tenor_days * NS_PER_DAY)
    expiries = listed_expiries(int(ts[0]), int(ts[-1]) + high, cfg.expiries)
    first = np.searchsorted(expiries, ts + low, side="left")
    count = np.searchsorted(expiries, ts + high, side="right") - first
    tick = np.repeat(np.arange(ts.size), count)
    within = np.arange(tick.size) - np.repeat(np.cumsum(count) - count, count)
    expiry = expiries[first[tick] + within]
    tau = (expiry - ts[tick]) / NS_PER_YEAR
    forward = spot[tick] * np.exp(rate[tick] * tau)
    strike = np.maximum(np.round(forward / step), 1.0) * step
    return pl.DataFrame(
        {
            "tick": tick.astype(np.int64),
            "expiry": expiry.astype(np.int64),
            "strike": strike,
            "kind": np.where(strike >= forward, 1.0, -1.0),
        }
    )


def with_listed(
    aligned: AlignedFlow, market: Market, strategy: Strategy
) -> tuple[AlignedFlow, ListedOptions]:
    """The flow's series followed by the listed options of every path of the batch, and which
    of them each tick (global over the batch) may trade."""
    n_ticks = len(market.ts)
    if strategy.vega_hedge.policy == "none":
        return aligned, no_listed(aligned, n_ticks)
    frames = []
    for k in range(market.n_paths):
        sl = market.path(k)
        atm = at_the_money(market.ts[sl], market.spot[sl], market.rate[sl], strategy)
        frames.append(atm.with_columns(pl.col("tick") + sl.start))
    rows = pl.concat(frames)
    keys = rows.select("expiry", "strike", "kind").unique().sort("expiry", "strike", "kind")
    n_flow = len(aligned.series_expiry)
    keys = keys.with_row_index("series", offset=n_flow).with_columns(
        expiry_id=pl.col("expiry").rank("dense").cast(pl.Int64) - 1,
        strike_id=pl.struct("expiry", "strike").rank("dense").cast(pl.Int64) - 1,
    )
    rows = rows.join(keys, on=["expiry", "strike", "kind"], how="left").sort("tick", "expiry")
    counts = np.bincount(rows["tick"].to_numpy(), minlength=n_ticks)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def ids(own: np.ndarray, column: str) -> np.ndarray:
        start = int(own.max()) + 1 if own.size else 0
        return np.concatenate([own, keys[column].to_numpy() + start]).astype(np.int64)

    extended = dataclasses.replace(
        aligned,
        series_expiry=np.concatenate([aligned.series_expiry, keys["expiry"].to_numpy()]),
        series_strike=np.concatenate([aligned.series_strike, keys["strike"].to_numpy()]),
        series_kind=np.concatenate([aligned.series_kind, keys["kind"].to_numpy()]),
        series_expiry_id=ids(aligned.series_expiry_id, "expiry_id"),
        series_strike_id=ids(aligned.series_strike_id, "strike_id"),
    )
    listed = ListedOptions(offsets, rows["series"].to_numpy().astype(np.int64), n_flow)
    return extended, listed
