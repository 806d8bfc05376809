"""Kernel record arrays -> the run-folder tables of docs/design.md, each carrying run_id."""

from __future__ import annotations

import operator
from dataclasses import dataclass
from functools import reduce
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from backtest.kernel.types import (
    CLOSE_REASONS,
    HEDGE_REASONS,
    LP_EVENTS,
    RECORD_KINDS,
    REJECT_REASONS,
    SERIES_COMPONENTS,
)

if TYPE_CHECKING:
    from backtest.inputs.batch import Batch
    from backtest.kernel.types import KernelOutput

UTC_NS = pl.Datetime("ns", "UTC")


def _timestamp(ns: pl.Expr | pl.Series) -> pl.Expr | pl.Series:
    """Engine nanoseconds as microsecond UTC timestamps: the unit DuckDB and most tools expect."""
    return ns.cast(UTC_NS).dt.cast_time_unit("us")


@dataclass
class Tables:
    steps: pl.DataFrame
    trades: pl.DataFrame
    hedges: pl.DataFrame
    series: pl.DataFrame
    liquidations: pl.DataFrame
    lp: pl.DataFrame


def row_sum(*columns: str) -> pl.Expr:
    """Columns added left to right: polars' sum_horizontal may add many columns in varying
    order, and byte-identical reruns need one order."""
    return reduce(operator.add, [pl.col(c) for c in columns])


def _frame(records: np.ndarray) -> pl.DataFrame:
    return pl.DataFrame({name: records[name] for name in records.dtype.names})


def _kind(code: pl.Expr) -> pl.Expr:
    return pl.when(code > 0).then(pl.lit("C")).otherwise(pl.lit("P"))


def _held_to_expiry(prep: Batch, trades: np.ndarray) -> np.ndarray:
    """The pool's PnL from each fill if it were held, unhedged, to expiry: premium received minus
    what the trader's side pays out at the first tick at or after expiry (null if the run ends
    first). This is what separates informed from noise flow: it charges each trade its outcome."""
    mkt, fl = prep.market, prep.aligned
    held = np.full(len(trades), np.nan)
    for k in range(mkt.n_paths):
        ticks = mkt.ts[mkt.path(k)]
        spot = mkt.spot[mkt.path(k)]
        rows = slice(int(fl.offsets[k]), int(fl.offsets[k + 1]))
        series = fl.series[rows]
        settle = np.searchsorted(ticks, fl.series_expiry[series], side="left")
        inside = settle < len(ticks)
        s_settle = spot[np.minimum(settle, len(ticks) - 1)]
        payoff = np.maximum(fl.series_kind[series] * (s_settle - fl.series_strike[series]), 0.0)
        rec = trades[rows]
        value = rec["premium"] - rec["side"] * rec["filled"] * payoff
        held[rows] = np.where(inside, value, np.nan)
    return held


def build(prep: Batch, out: KernelOutput) -> Tables:
    run_id = pl.lit(prep.run_id)
    mkt, fl = prep.market, prep.aligned
    tick_path = np.repeat(mkt.path_ids, np.diff(mkt.offsets))
    flow_path = np.repeat(mkt.path_ids, np.diff(fl.offsets))

    steps = _frame(out.records.steps).with_columns(
        run_id=run_id,
        path_id=pl.Series(tick_path),
        ts=_timestamp(pl.col("ts")),
        insolvent=pl.col("insolvent").cast(pl.Boolean),
        halted=pl.col("halted").cast(pl.Boolean),
        recall_blocked=pl.col("recall_blocked").cast(pl.Boolean),
    )
    steps = steps.select(
        "run_id", "path_id", *[c for c in steps.columns if c not in ("run_id", "path_id")]
    )

    series_keys = pl.DataFrame(
        {
            "series": np.arange(len(fl.series_expiry)),
            "expiry": _timestamp(pl.Series(fl.series_expiry)),
            "strike": fl.series_strike,
            "kind": fl.series_kind,
        }
    ).with_columns(kind=_kind(pl.col("kind")))
    flow_row = prep.flow["flow_row"].to_numpy()[fl.source_row]
    held = _held_to_expiry(prep, out.records.trades)
    trades = (
        _frame(out.records.trades)
        .with_columns(
            run_id=run_id,
            path_id=pl.Series(flow_path),
            ts=_timestamp(pl.col("ts")),
            side=pl.col("side").cast(pl.Int8),
            reject_reason=pl.Series(np.array(REJECT_REASONS)[out.records.trades["reject_reason"]]),
            informed=pl.Series(fl.informed, dtype=pl.Boolean),
            pnl_held_to_expiry=pl.Series(held).fill_nan(None),  # null: expires after the run
            reference=pl.col("reference").fill_nan(None),  # null: no price rule applied
            p_accept=pl.col("p_accept").fill_nan(None),
            oracle=pl.col("oracle").fill_nan(None),  # null: no oracle
            stale=pl.Series(fl.stale, dtype=pl.Boolean),
            flow_row=pl.Series(flow_row, dtype=pl.Int64),
        )
        .join(series_keys, on="series", how="left")
        .select(
            "run_id",
            "path_id",
            "ts",
            "expiry",
            "strike",
            "kind",
            "side",
            "size",
            "filled",
            "reject_reason",
            "spot",
            "iv",
            "mark",
            "vega",
            "fee",
            "fee_vega",
            "impact",
            "premium",
            "reference",
            "p_accept",
            "fee_forgone",
            "oracle",
            "oracle_gap",
            "stale",
            "informed",
            "pnl_held_to_expiry",
            "flow_row",
        )
    )

    def events(kind: str, code: str, labels, series: bool, *columns: str) -> pl.DataFrame:
        """A variable-length record kind as a table: its integer `code` column as labels,
        and (series) the option series' keys joined in."""
        rec = out.rows(kind)
        frame = _frame(rec).with_columns(
            run_id=run_id,
            path_id=pl.Series(np.repeat(mkt.path_ids, out.counts[:, RECORD_KINDS.index(kind)])),
            ts=_timestamp(pl.col("ts")),
            **{code: pl.Series(np.asarray(labels)[rec[code]], dtype=pl.String)},
        )
        if series:
            frame = frame.join(series_keys, on="series", how="left")
        return frame.select("run_id", "path_id", "ts", *columns)

    hedge_labels = [HEDGE_REASONS[c] for c in range(len(HEDGE_REASONS))]
    underlying = prep.strategy.hedge.instrument
    hedges = (
        events(
            "hedges",
            "reason",
            hedge_labels,
            True,
            *("qty", "spot", "exec_price", "slippage_cost", "gas_cost", "mev_cost", "reason"),
            *("unfilled", "venue_price_before", "venue_price_after", "sandwiched", "attacker_pnl"),
            *("series", "expiry", "strike", "kind", "iv", "vega", "fee"),
        )
        .select(
            pl.exclude("series", "expiry", "strike", "kind", "iv", "vega", "fee"),
            instrument=pl.when(pl.col("series") >= 0)
            .then(pl.lit("option"))
            .otherwise(pl.lit(underlying)),
            expiry=pl.col("expiry"),
            strike=pl.col("strike"),
            kind=pl.col("kind"),
            iv=pl.col("iv").fill_nan(None),  # null: the underlying
            vega=pl.col("vega"),
            fee=pl.col("fee"),
        )
        .with_columns(pl.col("sandwiched").cast(pl.Boolean))
    )
    liquidations = events(
        "closes",
        "reason",
        CLOSE_REASONS,
        True,
        *("expiry", "strike", "kind", "qty", "mark", "penalty", "reason"),
    )
    lp = events(
        "lp",
        "event",
        LP_EVENTS,
        False,
        *(
            "event",
            "amount",
            "shares",
            "nav_per_share",
            "unwind_cost",
            "fee",
            "yield_driven",
            "waited",
        ),
    ).with_columns(pl.col("yield_driven", "waited").cast(pl.Boolean))

    n_paths, n_series = out.records.series.shape
    flat = out.records.series.reshape(-1)
    series = (
        _frame(flat)
        .with_columns(
            run_id=run_id,
            path_id=pl.Series(np.repeat(mkt.path_ids, n_series)),
            series=pl.Series(np.tile(np.arange(n_series), n_paths)),
        )
        .filter(pl.col("volume") > 0)
        .join(series_keys, on="series", how="left")
        .with_columns(
            pnl_fees=pl.col("fees"),
            pnl_impact=pl.col("impact"),
            pnl_total=row_sum(*SERIES_COMPONENTS, "fees", "impact", "pnl_liquidation"),
            listed=pl.col("series") >= prep.listed.first,
        )
        .select(
            "run_id",
            "path_id",
            "expiry",
            "strike",
            "kind",
            "listed",
            "volume",
            "fees",
            *SERIES_COMPONENTS,
            "pnl_fees",
            "pnl_impact",
            "pnl_liquidation",
            "pnl_total",
        )
        .sort("path_id", "expiry", "strike", "kind")
    )
    return Tables(
        steps=steps,
        trades=trades,
        hedges=hedges,
        series=series,
        liquidations=liquidations,
        lp=lp,
    )
