"""Per-path summary metrics: what LPs earned, where it came from, and what nearly broke the pool.

Every metric is a polars group-by over `path_id`, so all paths are summarised at once: a Monte
Carlo run has thousands of paths, and a Python loop over them would cost more than the simulation.
Each keeps its order (maintain_order): polars otherwise adds a group's floats in an order that
varies between processes, and identical runs must give identical summaries.

What an LP earned (lp_return, apy, sharpe, volatility, drawdowns) is measured on NAV per share, so
deposits and withdrawals are not mistaken for profit or loss; without LP flows it is NAV / initial.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from backtest.kernel.types import PNL_COMPONENTS, REJECT_REASONS, SERIES_COMPONENTS
from backtest.results.tables import row_sum

if TYPE_CHECKING:
    from backtest.inputs.batch import Batch
    from backtest.results.tables import Tables

SECONDS_PER_YEAR = 365 * 86_400
SECONDS_PER_DAY = 86_400
TOTALS = (*PNL_COMPONENTS, "pnl_total", "lp_flow")
REASONS = tuple(r for r in REJECT_REASONS if r)
UTC_US = pl.Datetime("us", "UTC")
QUANTILES = (0.05, 0.25, 0.50, 0.75, 0.95)
TAIL_LEVELS = (0.95, 0.99)

INITIAL_NAV_PER_SHARE = 1.0  # the kernel issues one share per unit of initial capital

nav, ts, per_share = pl.col("nav"), pl.col("ts"), pl.col("nav_per_share")


def _lp_ticks(steps: pl.DataFrame) -> pl.DataFrame:
    """Ticks at which LPs hold shares: after a full withdrawal NAV per share means nothing."""
    return steps.filter(pl.col("shares") > 0)


def _ratio(num: pl.Expr, den: pl.Expr, when: pl.Expr | None = None) -> pl.Expr:
    """num / den, null where the ratio means nothing (den not positive by default)."""
    return pl.when(den > 0 if when is None else when).then(num / den)


def _step_metrics(steps: pl.DataFrame, initial: float) -> pl.DataFrame:
    by_path = steps.with_columns(
        option_move=row_sum(*SERIES_COMPONENTS).abs(),
        reconcile=(
            nav
            - nav.shift(1).over("path_id").fill_null(initial)
            - pl.col("pnl_total")
            - pl.col("lp_flow")
        ).abs(),
    )
    return by_path.group_by("path_id", maintain_order=True).agg(
        *[pl.col(c).sum() for c in TOTALS],
        start=ts.first(),
        end=ts.last(),
        n_ticks=pl.len().cast(pl.Int64),
        final_nav=nav.last(),
        max_utilisation=pl.col("utilisation").max(),
        mean_utilisation=pl.col("utilisation").mean(),
        insolvent=pl.col("insolvent").any(),
        insolvency_ts=ts.filter(pl.col("insolvent")).first(),
        bad_debt=pl.when(nav.min() < 0).then(-nav.min()).otherwise(0.0),
        min_free_cash=pl.col("free_cash").min(),
        peak_leverage=pl.col("leverage").max(),
        max_collateral_gap=pl.col("collateral_gap").max(),
        n_gap_ticks=(pl.col("collateral_gap") > 0).sum().cast(pl.Int64),
        residual_share=_ratio(
            pl.col("pnl_residual").abs().sum(), pl.col("option_move").sum()
        ).fill_null(0.0),
        reconcile_max_abs=pl.col("reconcile").max(),
        # Lent collateral (all 0 with lending off): the supply yield (part of pnl_interest),
        # cash lent on average and at most, the most that could not be recalled, and the
        # ticks the pool needed lent cash it could not recall.
        lending_yield=pl.col("lending_yield").sum(),
        # What all the money market's borrowers paid: the pool's yield is a share of it.
        lending_borrow_interest=pl.col("lending_borrow_interest").sum(),
        mean_lent=pl.col("lent").mean(),
        max_lent=pl.col("lent").max(),
        max_lent_locked=pl.col("lent_locked").max(),
        n_recall_blocked=pl.col("recall_blocked").sum().cast(pl.Int64),
    )


def _daily_metrics(steps: pl.DataFrame) -> pl.DataFrame:
    """Sharpe and volatility of daily returns (last NAV per share of each UTC day), zero risk-free
    rate, annualised with 365 days; null with fewer than three days or a non-positive value to
    divide by."""
    daily = (
        _lp_ticks(steps)
        .group_by_dynamic("ts", every="1d", group_by="path_id")
        .agg(value=per_share.last())
    )
    value = pl.col("value")
    ret = value / value.shift(1) - 1.0
    sd = ret.std(ddof=1)
    valid = (pl.len() >= 3) & ~((value <= 0) & value.shift(-1).is_not_null()).any() & (sd > 0)
    return daily.group_by("path_id", maintain_order=True).agg(
        sharpe=_ratio(ret.mean() * math.sqrt(365.0), sd, valid),
        volatility=pl.when(valid).then(sd * math.sqrt(365.0)),
    )


def _drawdown_metrics(steps: pl.DataFrame) -> pl.DataFrame:
    """The LPs' return and their deepest drawdown (depth, dates) and longest time under water.

    An episode starts at each tick where NAV per share is at its running peak; it is under water
    until the next episode starts (recovery) or the path ends.
    """
    peak = per_share.cum_max().over("path_id")
    episodes = (
        _lp_ticks(steps)
        .select(
            "path_id",
            "ts",
            "nav_per_share",
            depth=1.0 - per_share / peak,
            episode=(per_share >= peak).cum_sum().over("path_id"),
        )
        .group_by("path_id", "episode", maintain_order=True)
        .agg(
            peak=ts.first(),
            last=ts.last(),
            underwater=pl.len() > 1,
            depth=pl.col("depth").max(),
            trough=ts.get(pl.col("depth").arg_max()),
            final_per_share=per_share.last(),
        )
        .with_columns(recovery=pl.col("peak").shift(-1).over("path_id"))
        .with_columns(
            days=pl.when("underwater")
            .then(pl.coalesce("recovery", pl.col("last").max().over("path_id")) - pl.col("peak"))
            .otherwise(pl.duration(seconds=0))
            .dt.total_seconds(fractional=True)
            / SECONDS_PER_DAY
        )
    )

    def at_deepest(name: str) -> pl.Expr:
        """The episode holding the path's deepest point (the first, on a tie)."""
        return pl.when(pl.col("depth").max() > 0).then(pl.col(name).get(pl.col("depth").arg_max()))

    return episodes.group_by("path_id", maintain_order=True).agg(
        # LPs cannot lose more than they put in: what an insolvent pool owes beyond that is
        # bad_debt, borne by whoever the pool owes, not a return below -100 %.
        lp_return=(pl.col("final_per_share").last() / INITIAL_NAV_PER_SHARE - 1.0).clip(-1.0),
        max_drawdown=pl.col("depth").max().clip(upper_bound=1.0),
        max_drawdown_peak=at_deepest("peak"),
        max_drawdown_trough=at_deepest("trough"),
        max_drawdown_recovery=at_deepest("recovery"),
        longest_underwater_days=pl.col("days").max(),
    )


def _trade_metrics(trades: pl.DataFrame) -> pl.DataFrame:
    filled, size, reason = pl.col("filled"), pl.col("size"), pl.col("reject_reason")
    rejected = filled == 0
    partial = (filled > 0) & (filled < size)
    return trades.group_by("path_id", maintain_order=True).agg(
        *[(rejected & (reason == r)).sum().alias(f"n_rejected_{r}") for r in REASONS],
        *[(partial & (reason == r)).sum().alias(f"n_partial_{r}") for r in REASONS],
        n_trades=(filled > 0).sum(),
        n_partial=partial.sum(),
        n_rejected=rejected.sum(),
        volume=filled.filter(filled > 0).sum(),
        # Option notional the pool traded (size x spot, USD), sold and bought back alike: what
        # [flow] notional_per_nav sizes, so return per unit of it does not scale with that key.
        notional_written=(filled * pl.col("spot")).filter(filled > 0).sum(),
        n_flow=pl.len(),
        fill_ratio=_ratio(filled.sum(), size.sum()),
        vega_taken=(filled * pl.col("vega")).abs().sum(),
        fees_vega=pl.col("fee_vega").sum(),
        n_informed=(pl.col("informed") & (filled > 0)).sum(),
        # Each fill's outcome held to expiry, split by who traded: adverse selection in USD.
        pnl_informed=pl.col("pnl_held_to_expiry").filter(pl.col("informed")).fill_nan(None).sum(),
        pnl_noise=pl.col("pnl_held_to_expiry").filter(~pl.col("informed")).fill_nan(None).sum(),
        # Flow lost to the reference venue (count: n_rejected_price): spot notional, fees.
        notional_lost_to_reference=(size * pl.col("spot")).filter(reason == "price").sum(),
        fees_forgone=pl.col("fee_forgone").sum(),
        # Stale-quote traders: fills, and what they made on the oracle's price net of what
        # they paid (fees, and the impact of their own fills).
        n_stale_trades=(pl.col("stale") & (filled > 0)).sum(),
        oracle_arb_pnl=(pl.col("oracle_gap") - pl.col("fee") - pl.col("impact"))
        .filter(pl.col("stale"))
        .sum(),
    )


def _hedge_metrics(hedges: pl.DataFrame) -> pl.DataFrame:
    """The delta hedge's trades in the underlying, and the vega hedge's in listed options (their
    cost is the spread paid over the mark plus the exchange's fee: pnl_vega_hedge_cost)."""
    costs = ("slippage_cost", "gas_cost", "mev_cost")
    option = pl.col("instrument") == "option"

    def underlying(expr: pl.Expr) -> pl.Expr:
        return expr.filter(~option)

    return hedges.group_by("path_id", maintain_order=True).agg(
        n_hedges=(~option).sum(),
        hedge_volume=underlying(pl.col("qty").abs()).sum(),
        hedge_notional=underlying(pl.col("qty").abs() * pl.col("spot")).sum(),
        hedge_cost=underlying(row_sum(*costs)).sum(),
        hedge_slippage=underlying(pl.col("slippage_cost")).sum(),
        hedge_gas=underlying(pl.col("gas_cost")).sum(),
        hedge_mev=underlying(pl.col("mev_cost")).sum(),
        n_sandwiched=underlying(pl.col("sandwiched")).sum(),
        attacker_pnl=underlying(pl.col("attacker_pnl")).sum(),
        n_vega_hedges=option.sum(),
        vega_hedged=pl.col("vega").filter(option).abs().sum(),
        vega_hedge_cost=(pl.col("slippage_cost") + pl.col("fee")).filter(option).sum(),
    )


def _vega_hedge_pnl(series: pl.DataFrame) -> pl.DataFrame:
    """What the listed options the vega hedge bought earned in greeks, before their cost, and
    in three parts: their delta PnL (which the delta hedge offsets: the pool's net delta
    includes them), their vol PnL (vega, vanna, volga: what the hedge is for) and the rest
    (gamma, theta, residual: the variance premium they hand back)."""
    listed = pl.col("listed")
    return series.group_by("path_id", maintain_order=True).agg(
        pnl_vega_hedge=row_sum(*SERIES_COMPONENTS).filter(listed).sum(),
        pnl_vega_hedge_delta=pl.col("pnl_delta").filter(listed).sum(),
        pnl_vega_hedge_vol=row_sum("pnl_vega", "pnl_vanna", "pnl_volga").filter(listed).sum(),
        pnl_vega_hedge_carry=row_sum("pnl_gamma", "pnl_theta", "pnl_residual").filter(listed).sum(),
    )


def _open_delta_metrics(steps: pl.DataFrame, hedges: pl.DataFrame) -> pl.DataFrame:
    """How long the delta a venue or a price limit cut stayed open: each policy hedge's
    unfilled part is open until the next tick (when the policy looks again), so the integral
    is sum |unfilled| x the time to the next tick, in underlying x days; summing the unfilled
    amounts alone would count the same open delta at every retry."""
    next_tick = steps.select("path_id", "ts", until=ts.shift(-1).over("path_id") - ts)
    cut = hedges.filter(
        ~pl.col("reason").is_in(["liquidation", "withdrawal"]) & (pl.col("instrument") != "option")
    )
    return (
        cut.join(next_tick, on=["path_id", "ts"], how="left")
        .group_by("path_id", maintain_order=True)
        .agg(
            unfilled_delta_days=(
                pl.col("unfilled").abs()
                * pl.col("until").dt.total_seconds(fractional=True).fill_null(0.0)
            ).sum()
            / SECONDS_PER_DAY
        )
    )


def _liquidation_metrics(closes: pl.DataFrame) -> pl.DataFrame:
    forced = pl.col("reason") == "liquidation"
    return closes.group_by("path_id", maintain_order=True).agg(
        n_liquidations=forced.sum(),
        liquidation_volume=pl.col("qty").abs().filter(forced).sum(),
    )


def _lp_metrics(lp: pl.DataFrame) -> pl.DataFrame:
    """What LPs put in and took out, and what their exits cost them."""
    event, amount = pl.col("event"), pl.col("amount")
    return lp.group_by("path_id", maintain_order=True).agg(
        lp_deposits=amount.filter(event == "deposit").sum(),
        lp_withdrawals=-amount.filter(event == "withdrawal").sum(),
        n_withdrawals=(event == "withdrawal").sum(),
        n_lp_rejected=(event == "rejected").sum(),
        n_withdrawals_waited=((event == "withdrawal") & pl.col("waited")).sum(),
        lp_unwind_cost=pl.col("unwind_cost").sum(),
        lp_withdrawal_fees=pl.col("fee").sum(),
    )


COUNTS = (
    "n_trades",
    "n_partial",
    "n_rejected",
    "n_flow",
    *[f"n_{state}_{r}" for state in ("rejected", "partial") for r in REASONS],
    "n_hedges",
    "n_vega_hedges",
    "n_sandwiched",
    "n_stale_trades",
    "n_informed",
    "n_liquidations",
    "n_withdrawals",
    "n_lp_rejected",
    "n_withdrawals_waited",
)
AMOUNTS = (
    "volume",
    "notional_written",
    "vega_taken",
    "fees_vega",
    "pnl_informed",
    "pnl_noise",
    "notional_lost_to_reference",
    "fees_forgone",
    "oracle_arb_pnl",
    "hedge_volume",
    "hedge_notional",
    "hedge_cost",
    "hedge_slippage",
    "hedge_gas",
    "hedge_mev",
    "vega_hedged",
    "vega_hedge_cost",
    "pnl_vega_hedge",
    "pnl_vega_hedge_delta",
    "pnl_vega_hedge_vol",
    "pnl_vega_hedge_carry",
    "unfilled_delta_days",
    "attacker_pnl",
    "liquidation_volume",
    "lp_deposits",
    "lp_withdrawals",
    "lp_unwind_cost",
    "lp_withdrawal_fees",
)
TIMESTAMPS = (
    "start",
    "end",
    "insolvency_ts",
    "max_drawdown_peak",
    "max_drawdown_trough",
    "max_drawdown_recovery",
)
# Keys in the order of summary.json; the first block is the original contract (docs/design.md).
COLUMNS = (
    "run_id",
    "strategy",
    "path_id",
    "n_paths",
    "start",
    "end",
    "n_ticks",
    "initial_nav",
    "final_nav",
    *TOTALS,
    "lp_return",
    "apy",
    "sharpe",
    "max_drawdown",
    "n_trades",
    "n_partial",
    "n_rejected",
    "volume",
    "n_hedges",
    "hedge_volume",
    "hedge_notional",
    "hedge_cost_over_fees",
    "max_utilisation",
    "mean_utilisation",
    "insolvent",
    "insolvency_ts",
    "bad_debt",
    "residual_share",
    "reconcile_max_abs",
    "volatility",
    "max_drawdown_peak",
    "max_drawdown_trough",
    "max_drawdown_recovery",
    "longest_underwater_days",
    "gamma_theta_ratio",
    "n_flow",
    "fill_ratio",
    "notional_written",
    *[f"n_{state}_{r}" for state in ("rejected", "partial") for r in REASONS],
    "hedge_cost",
    "hedge_slippage",
    "hedge_gas",
    "hedge_mev",
    "n_sandwiched",
    "attacker_pnl",
    "hedge_cost_bps",
    "vega_taken",
    "fees_vega",
    "fees_per_vega",
    "n_informed",
    "pnl_informed",
    "pnl_noise",
    "notional_lost_to_reference",
    "fees_forgone",
    "min_free_cash",
    "peak_leverage",
    "max_collateral_gap",
    "n_gap_ticks",
    "n_liquidations",
    "liquidation_volume",
    "lp_deposits",
    "lp_withdrawals",
    "n_withdrawals",
    "n_lp_rejected",
    "lp_unwind_cost",
    "lp_withdrawal_fees",
    "n_vega_hedges",
    "vega_hedged",
    "vega_hedge_cost",
    "pnl_vega_hedge",
    "lending_yield",
    "mean_lent",
    "max_lent",
    "max_lent_locked",
    "n_recall_blocked",
    "n_withdrawals_waited",
    "n_stale_trades",
    "oracle_arb_pnl",
    "pnl_vega_hedge_delta",
    "pnl_vega_hedge_vol",
    "pnl_vega_hedge_carry",
    "unfilled_delta_days",
    "lending_borrow_interest",
)


def summary_frame(
    steps: pl.DataFrame,
    trades: pl.DataFrame,
    hedges: pl.DataFrame,
    liquidations: pl.DataFrame,
    lp: pl.DataFrame,
    series: pl.DataFrame,
    *,
    initial: float,
    run_id: str,
    strategy: str,
    n_paths: int,
) -> pl.DataFrame:
    """One row per path (in the order paths appear in `steps`), columns as in COLUMNS.

    `n_paths` is the caller's count: a large run is summarised batch by batch, and the run
    folder writer sets the whole run's.
    """
    years = (pl.col("end") - pl.col("start")).dt.total_seconds(fractional=True) / SECONDS_PER_YEAR
    growth = 1.0 + pl.col("lp_return")
    frame = (
        _step_metrics(steps, initial)
        .join(_daily_metrics(steps), on="path_id", how="left")
        .join(_drawdown_metrics(steps), on="path_id", how="left", maintain_order="left")
        .join(_trade_metrics(trades), on="path_id", how="left", maintain_order="left")
        .join(_hedge_metrics(hedges), on="path_id", how="left", maintain_order="left")
        .join(_liquidation_metrics(liquidations), on="path_id", how="left", maintain_order="left")
        .join(_lp_metrics(lp), on="path_id", how="left", maintain_order="left")
        .join(_vega_hedge_pnl(series), on="path_id", how="left", maintain_order="left")
        .join(_open_delta_metrics(steps, hedges), on="path_id", how="left", maintain_order="left")
        .with_columns(
            pl.col(*COUNTS).fill_null(0).cast(pl.Int64),
            pl.col(*AMOUNTS).fill_null(0.0),
        )
    )
    return frame.with_columns(
        pl.col(TIMESTAMPS).cast(UTC_US),
        run_id=pl.lit(run_id),
        strategy=pl.lit(strategy),
        n_paths=pl.lit(n_paths, pl.Int64),
        initial_nav=pl.lit(float(initial)),
        apy=pl.when(years <= 0)
        .then(None)
        .when(growth <= 0)
        .then(-1.0)
        .otherwise(growth ** (1.0 / years) - 1.0),
        hedge_cost_over_fees=_ratio(-pl.col("pnl_hedge_cost"), pl.col("pnl_fees")),
        gamma_theta_ratio=_ratio(
            -pl.col("pnl_gamma"), pl.col("pnl_theta"), pl.col("pnl_theta") != 0
        ),
        hedge_cost_bps=_ratio(1e4 * pl.col("hedge_cost"), pl.col("hedge_notional")),
        # Fee income per unit of vega risk taken on (USD per 1.00 of vol traded).
        fees_per_vega=_ratio(pl.col("pnl_fees"), pl.col("vega_taken")),
    ).select(COLUMNS)


def summarise(prep: Batch, tables: Tables) -> pl.DataFrame:
    return summary_frame(
        tables.steps,
        tables.trades,
        tables.hedges,
        tables.liquidations,
        tables.lp,
        tables.series,
        initial=prep.strategy.pool.initial_capital,
        run_id=prep.run_id,
        strategy=prep.strategy.name,
        n_paths=prep.market.n_paths,
    )


def tail_risk(returns: np.ndarray, level: float) -> tuple[float, float]:
    """Historical VaR and expected shortfall at `level`, as positive losses in return units.

    With n paths, the tail is the k = ceil(n (1 - level)) worst returns: VaR is minus the k-th
    worst, ES minus their mean (so ES >= VaR, and both are exact order statistics, not
    interpolations).
    """
    worst = np.sort(returns)[: max(1, math.ceil(len(returns) * (1.0 - level) - 1e-9))]
    return float(-worst[-1]), float(-worst.mean())


def distribution(summary: pl.DataFrame) -> dict:
    """Across-path distribution of a multi-path run: the numbers a risk analyst reads first."""
    returns = summary["lp_return"].drop_nulls().to_numpy()
    out: dict = {
        "n_paths": summary.height,
        "lp_return_mean": float(returns.mean()),
        "lp_return_std": float(returns.std(ddof=1)) if len(returns) > 1 else 0.0,
    }
    for q, value in zip(QUANTILES, np.quantile(returns, QUANTILES), strict=True):
        out[f"lp_return_q{round(100 * q):02d}"] = float(value)
    for level in TAIL_LEVELS:
        var, es = tail_risk(returns, level)
        out[f"var_{round(100 * level)}"] = var
        out[f"es_{round(100 * level)}"] = es
    out |= {
        "p_insolvent": float(summary["insolvent"].mean()),
        "mean_max_drawdown": float(summary["max_drawdown"].mean()),
        "mean_bad_debt": float(summary["bad_debt"].mean()),
        "mean_apy": summary["apy"].mean(),
        "mean_final_nav": float(summary["final_nav"].mean()),
    }
    return out
