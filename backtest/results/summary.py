"""Per-path summary metrics: what LPs earned, where it came from, and what nearly broke the pool."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from backtest.kernel.types import PNL_COMPONENTS, SERIES_COMPONENTS

if TYPE_CHECKING:
    from backtest.results.tables import Tables
    from backtest.runner import Prepared

SECONDS_PER_YEAR = 365 * 86_400
OPTION_COMPONENTS = list(SERIES_COMPONENTS)


def max_drawdown(nav: np.ndarray) -> float:
    """Largest fall from a running peak, as a fraction of that peak."""
    peak = np.maximum.accumulate(nav)
    return float(np.max(1.0 - nav / peak)) if len(nav) else 0.0


def daily_sharpe(ts: pl.Series, nav: pl.Series) -> float | None:
    """Annualised Sharpe of daily NAV returns (last NAV of each UTC day), zero risk-free rate."""
    daily = (
        pl.DataFrame({"ts": ts, "nav": nav})
        .group_by_dynamic("ts", every="1d")
        .agg(pl.col("nav").last())["nav"]
        .to_numpy()
    )
    if len(daily) < 3 or np.any(daily[:-1] <= 0):
        return None
    returns = np.diff(daily) / daily[:-1]
    sd = returns.std(ddof=1)
    return float(returns.mean() / sd * math.sqrt(365.0)) if sd > 0 else None


def apy(initial: float, final: float, years: float) -> float | None:
    if years <= 0:
        return None
    if final <= 0:
        return -1.0
    return (final / initial) ** (1.0 / years) - 1.0


def path_summary(
    steps: pl.DataFrame, trades: pl.DataFrame, hedges: pl.DataFrame, initial: float
) -> dict:
    nav = steps["nav"].to_numpy()
    ts = steps["ts"]
    years = (ts[-1] - ts[0]).total_seconds() / SECONDS_PER_YEAR
    totals = {c: float(steps[c].sum()) for c in (*PNL_COMPONENTS, "pnl_total", "lp_flow")}
    option_moves = steps.select(pl.sum_horizontal(OPTION_COMPONENTS).abs()).to_series().sum()
    reconcile = np.abs(
        np.diff(nav, prepend=initial) - steps["pnl_total"].to_numpy() - steps["lp_flow"].to_numpy()
    )
    insolvent = steps.filter(pl.col("insolvent"))
    fees = totals["pnl_fees"]
    filled = trades.filter(pl.col("filled") > 0)
    final = float(nav[-1])
    return {
        "start": ts[0],
        "end": ts[-1],
        "n_ticks": steps.height,
        "initial_nav": initial,
        "final_nav": final,
        **totals,
        "lp_return": final / initial - 1.0,
        "apy": apy(initial, final, years),
        "sharpe": daily_sharpe(ts, steps["nav"]),
        "max_drawdown": max_drawdown(nav),
        "n_trades": filled.height,
        "n_partial": trades.filter(
            (pl.col("filled") > 0) & (pl.col("filled") < pl.col("size"))
        ).height,
        "n_rejected": trades.filter(pl.col("filled") == 0).height,
        "volume": float(filled["filled"].sum()),
        "n_hedges": hedges.height,
        "hedge_volume": float(hedges["qty"].abs().sum()),
        "hedge_notional": float((hedges["qty"].abs() * hedges["spot"]).sum()),
        "hedge_cost_over_fees": -totals["pnl_hedge_cost"] / fees if fees > 0 else None,
        "max_utilisation": float(steps["utilisation"].max()),
        "mean_utilisation": float(steps["utilisation"].mean()),
        "insolvent": insolvent.height > 0,
        "insolvency_ts": insolvent["ts"][0] if insolvent.height else None,
        "bad_debt": max(0.0, -float(nav.min())),
        "residual_share": float(steps["pnl_residual"].abs().sum() / option_moves)
        if option_moves > 0
        else 0.0,
        "reconcile_max_abs": float(reconcile.max()),
    }


def summarise(prep: Prepared, tables: Tables) -> pl.DataFrame:
    rows = []
    initial = prep.strategy.pool.initial_capital
    for pid in prep.market.path_ids:
        pid = int(pid)
        rows.append(
            {
                "run_id": prep.run_id,
                "strategy": prep.strategy.name,
                "path_id": pid,
                "n_paths": prep.market.n_paths,
                **path_summary(
                    tables.steps.filter(pl.col("path_id") == pid),
                    tables.trades.filter(pl.col("path_id") == pid),
                    tables.hedges.filter(pl.col("path_id") == pid),
                    initial,
                ),
            }
        )
    return pl.DataFrame(rows, infer_schema_length=None)
