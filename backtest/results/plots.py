"""Run plots as PNG files.

matplotlib's object API on its Agg canvas (no pyplot): no global figure state, no display, safe in
worker processes. Long series are bucketed to at most MAX_POINTS drawn points, and multi-path
runs are drawn as quantile bands across paths, never path by path.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import matplotlib.dates as mdates
import numpy as np
import polars as pl
import polars.selectors as cs
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import Formatter, PercentFormatter

from backtest.kernel.types import PNL_COMPONENTS
from backtest.results.summary import tail_risk

MAX_POINTS = 5_000
DPI = 110
WIDE = (10.0, 4.8)
TALL = (10.0, 6.4)
FAN_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
# One colour per component, the same in every run's plots.
COLOURS = dict(
    zip(
        PNL_COMPONENTS,
        (
            "#1f77b4",
            "#d62728",
            "#9467bd",
            "#2ca02c",
            "#8c564b",
            "#e377c2",
            "#7f7f7f",
            "#17becf",
            "#98df8a",
            "#ff7f0e",
            "#bcbd22",
            "#aec7e8",
            "#393b79",
            "#637939",
            "#e7ba52",
            "#843c39",
        ),
        strict=True,
    )
)


def _figure(size: tuple[float, float] = WIDE, rows: int = 1) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=size, layout="constrained")
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    for ax in axes:
        ax.grid(alpha=0.3)
    return fig, list(axes)


def _legend_outside(ax: Axes) -> None:
    """Legend to the right of the axes, so it never covers a line."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)


def _save(fig: Figure, path: Path) -> Path:
    """No 'Software' stamp: the PNG then depends only on the data, and carries no URL."""
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    return path


def _dates(ax: Axes, ts: np.ndarray) -> None:
    """Concise date ticks; the label carries the full range, since the first tick may show only a
    month."""
    locator = mdates.AutoDateLocator(minticks=4, maxticks=10)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, show_offset=False))
    if len(ts) > 1:
        ax.set_xlim(ts[0], ts[-1])
    span = f": {_day(ts[0])} to {_day(ts[-1])}" if len(ts) else ""
    ax.set_xlabel(f"date (UTC){span}")


def _day(value: np.datetime64) -> str:
    return str(np.datetime_as_string(value, unit="D"))


class _Scaled(Formatter):
    """Tick labels in a unit (k, M) with as many decimals as the tick step needs, so labels of a
    narrow range (a NAV between 1.000 M and 1.003 M) stay distinct."""

    def __init__(self, scale: float) -> None:
        self.scale = scale

    def __call__(self, x: float, pos: int | None = None) -> str:
        return f"{x / self.scale:,.2f}"

    def format_ticks(self, values: list[float]) -> list[str]:
        scaled = np.asarray(values, dtype=float) / self.scale
        step = float(np.min(np.diff(scaled))) if len(scaled) > 1 else 1.0
        decimals = next((d for d in range(7) if abs(step * 10**d - round(step * 10**d)) < 1e-6), 6)
        return [f"{v:,.{decimals}f}" for v in scaled]


def _money(ax: Axes, values: np.ndarray, what: str) -> None:
    """Label a USD y axis in the unit that keeps tick labels short (USD, k USD or M USD)."""
    top = float(np.nanmax(np.abs(values))) if len(values) else 0.0
    scale, unit = (1e6, "M USD") if top >= 1e6 else (1e3, "k USD") if top >= 1e4 else (1.0, "USD")
    ax.yaxis.set_major_formatter(_Scaled(scale))
    ax.set_ylabel(f"{what} ({unit})")


def _thin(frame: pl.DataFrame, *aggs: pl.Expr) -> pl.DataFrame:
    """At most MAX_POINTS rows, bucketing consecutive rows: each column is reduced by its own
    aggregation (last value for levels, the extreme for drawdowns and exposures) so spikes
    survive; a year of hourly ticks is drawn as is."""
    step = math.ceil(frame.height / MAX_POINTS)
    if step <= 1:
        return frame
    bucket = (pl.int_range(pl.len()) // step).alias("bucket")
    return (
        frame.group_by(bucket, maintain_order=True).agg(pl.col("ts").last(), *aggs).drop("bucket")
    )


def _extreme(name: str) -> pl.Expr:
    """The value of largest magnitude in a bucket, sign kept."""
    return pl.col(name).get(pl.col(name).abs().arg_max())


def _title(ax: Axes, text: str, subtitle: str) -> None:
    ax.set_title(f"{text} — {subtitle}" if subtitle else text, loc="left", fontsize=12)


def nav_vs_spot(steps: pl.DataFrame, path: Path, subtitle: str = "") -> Path:
    """Pool NAV against the underlying's price: does the pool earn, or just follow spot?"""
    data = _thin(steps.select("ts", "nav", "spot"), pl.col("nav").last(), pl.col("spot").last())
    fig, (ax,) = _figure()
    ts = data["ts"].to_numpy()
    (nav_line,) = ax.plot(ts, data["nav"], color="#1f77b4", lw=1.6, label="pool NAV")
    _money(ax, data["nav"].to_numpy(), "NAV")
    spot_ax = ax.twinx()
    (spot_line,) = spot_ax.plot(ts, data["spot"], color="#ff7f0e", lw=1.0, alpha=0.8, label="spot")
    spot_ax.set_ylabel("spot (USD)")
    spot_ax.yaxis.set_major_formatter(_Scaled(1.0))
    spot_ax.legend(handles=[nav_line, spot_line], loc="upper left", fontsize=9)  # drawn on top
    _title(ax, "NAV vs spot", subtitle)
    _dates(ax, ts)
    return _save(fig, path)


def attribution(steps: pl.DataFrame, path: Path, subtitle: str = "") -> Path:
    """Cumulative PnL by component; components that stayed at zero are left out of the legend."""
    shown = [c for c in PNL_COMPONENTS if c in steps.columns and steps[c].abs().max() > 0]
    cumulative = steps.select("ts", *[pl.col(c).cum_sum() for c in (*shown, "pnl_total")])
    data = _thin(cumulative, *[pl.col(c).last() for c in (*shown, "pnl_total")])
    fig, (ax,) = _figure(TALL)
    ts = data["ts"].to_numpy()
    for c in shown:
        ax.plot(ts, data[c], color=COLOURS[c], lw=1.3, label=c.removeprefix("pnl_"))
    ax.plot(ts, data["pnl_total"], color="black", lw=2.2, label="total")
    ax.axhline(0.0, color="black", lw=0.6)
    _money(ax, data.drop("ts").to_numpy().ravel(), "cumulative PnL")
    _legend_outside(ax)
    _title(ax, "Cumulative PnL attribution", subtitle)
    _dates(ax, ts)
    return _save(fig, path)


def net_delta(
    steps: pl.DataFrame,
    hedges: pl.DataFrame,
    path: Path,
    subtitle: str = "",
    threshold: float | None = None,
) -> Path:
    """Option delta, hedge position and hedge trades (top); what is left, as a share of NAV,
    against the hedge band when the policy has a fixed one (bottom)."""
    exposure = pl.col("net_delta") * pl.col("spot") / pl.col("nav") * 100.0
    data = _thin(
        steps.select("ts", "book_delta", "hedge_units", "net_delta", exposure=exposure),
        pl.col("book_delta").last(),
        pl.col("hedge_units").last(),
        _extreme("net_delta"),
        _extreme("exposure"),
    )
    fig, (top, bottom) = _figure(TALL, rows=2)
    ts = data["ts"].to_numpy()
    top.plot(ts, data["book_delta"], color="#9467bd", lw=1.0, label="options delta")
    top.plot(ts, data["hedge_units"], color="#7f7f7f", lw=1.0, label="hedge position")
    top.plot(ts, data["net_delta"], color="black", lw=1.2, label="net delta")
    done = hedges.select(pl.col("ts").cast(steps.schema["ts"]), "qty").join(
        steps.select("ts", "hedge_units"), on="ts", how="left"
    )
    for sign, marker, colour, label in (
        (1, "^", "#2ca02c", "hedge buy"),
        (-1, "v", "#d62728", "hedge sell"),
    ):
        rows = done.filter(pl.col("qty") * sign > 0)
        top.scatter(
            rows["ts"].to_numpy(),
            rows["hedge_units"],
            marker=marker,
            s=18,
            color=colour,
            zorder=3,
            label=f"{label} ({rows.height:,})",
        )
    top.axhline(0.0, color="black", lw=0.6)
    top.set_ylabel("delta (underlying units)")
    _legend_outside(top)
    bottom.plot(ts, data["exposure"], color="black", lw=0.9, label="net delta × spot / NAV")
    if threshold is not None:
        for level in (threshold, -threshold):
            bottom.axhline(100.0 * level, color="#d62728", lw=1.0, ls="--")
        bottom.plot([], [], color="#d62728", ls="--", label=f"hedge band ±{100 * threshold:g} %")
    bottom.yaxis.set_major_formatter(PercentFormatter())
    bottom.set_ylabel("net delta (% of NAV)")
    _legend_outside(bottom)
    _title(top, "Net delta and hedge trades", subtitle)
    _dates(bottom, ts)
    return _save(fig, path)


def vega_utilisation(
    steps: pl.DataFrame, path: Path, subtitle: str = "", max_utilisation: float | None = None
) -> Path:
    """Vega at risk (top; with a vega hedge, also the flow's book before it) and how much of the
    pool's capital backs it (bottom)."""
    if "listed_vega" not in steps.columns:  # a run from before vega hedging
        steps = steps.with_columns(listed_vega=pl.lit(0.0))
    data = _thin(
        steps.select(
            "ts",
            vega=pl.col("book_vega") / 100.0,
            before=(pl.col("book_vega") - pl.col("listed_vega")) / 100.0,
            utilisation=pl.col("utilisation") * 100,
        ),
        _extreme("vega"),
        _extreme("before"),
        pl.col("utilisation").max(),
    )
    fig, (top, bottom) = _figure(TALL, rows=2)
    ts = data["ts"].to_numpy()
    vega = data["vega"].to_numpy()
    top.fill_between(
        ts, vega, 0.0, where=vega >= 0, color="#2ca02c", alpha=0.5, lw=0, label="long vega"
    )
    top.fill_between(
        ts, vega, 0.0, where=vega < 0, color="#d62728", alpha=0.5, lw=0, label="short vega"
    )
    top.axhline(0.0, color="black", lw=0.6)
    if (steps["listed_vega"] != 0).any():
        before = data["before"].to_numpy()
        top.plot(ts, before, color="black", lw=0.8, label="before the vega hedge")
        vega = np.concatenate([vega, before])  # the axis holds both
    _money(top, vega, "book vega per vol point")
    _legend_outside(top)
    bottom.plot(ts, data["utilisation"], color="#1f77b4", lw=1.0, label="utilisation")
    if max_utilisation is not None:
        bottom.axhline(
            100 * max_utilisation,
            color="#d62728",
            ls="--",
            lw=1.0,
            label=f"cap {100 * max_utilisation:g} %",
        )
    bottom.set_ylim(bottom=0)
    bottom.yaxis.set_major_formatter(PercentFormatter())
    bottom.set_ylabel("collateral / NAV (%)")
    _legend_outside(bottom)
    _title(top, "Vega exposure and utilisation", subtitle)
    _dates(bottom, ts)
    return _save(fig, path)


def drawdown(steps: pl.DataFrame, path: Path, subtitle: str = "") -> Path:
    """Distance below the running peak of NAV per share (what an LP sees, as in the summary's
    max_drawdown), deepest point marked; runs from before LP shares existed use NAV."""
    if "nav_per_share" in steps.columns:
        steps, value = steps.filter(pl.col("shares") > 0), pl.col("nav_per_share")
    else:
        value = pl.col("nav")
    under = (value / value.cum_max() - 1.0) * 100.0
    data = _thin(steps.select("ts", drawdown=under), pl.col("drawdown").min())
    fig, (ax,) = _figure()
    ts = data["ts"].to_numpy()
    dd = data["drawdown"].to_numpy()
    ax.fill_between(ts, dd, 0.0, color="#d62728", alpha=0.35, lw=0)
    ax.plot(ts, dd, color="#d62728", lw=0.9)
    if len(dd) and dd.min() < 0:
        k = int(np.argmin(dd))
        ax.annotate(
            f"max drawdown {dd[k]:.2f} %",
            xy=(ts[k], dd[k]),
            xytext=(14, -6),
            textcoords="offset points",
            fontsize=9,
            va="top",
            arrowprops={"arrowstyle": "-", "color": "#555555", "lw": 0.8},
        )
        ax.set_ylim(dd.min() * 1.25, -0.05 * dd.min())
    ax.yaxis.set_major_formatter(PercentFormatter())
    ax.set_ylabel("below peak NAV per share (%)")
    _title(ax, "Drawdown", subtitle)
    _dates(ax, ts)
    return _save(fig, path)


def lending(steps: pl.DataFrame, path: Path, subtitle: str = "") -> Path:
    """Lent collateral (top: supplied, and the part the money market could not repay) and the
    market it sits in (bottom: utilisation against the supply rate the pool earned)."""
    data = _thin(
        steps.select(
            "ts",
            "lent",
            "lent_locked",
            utilisation=pl.col("lending_utilisation") * 100,
            rate=pl.col("lending_rate") * 100,
        ),
        pl.col("lent").last(),
        pl.col("lent_locked").max(),
        pl.col("utilisation").max(),
        pl.col("rate").max(),
    )
    fig, (top, bottom) = _figure(TALL, rows=2)
    ts = data["ts"].to_numpy()
    top.plot(ts, data["lent"], color="#1f77b4", lw=1.0, label="lent")
    top.fill_between(
        ts, data["lent_locked"], 0.0, color="#d62728", alpha=0.45, lw=0, label="locked"
    )
    _money(top, data["lent"].to_numpy(), "lent collateral")
    _legend_outside(top)
    (used,) = bottom.plot(ts, data["utilisation"], color="#555555", lw=1.0, label="utilisation")
    bottom.set_ylabel("market utilisation (%)")
    bottom.yaxis.set_major_formatter(PercentFormatter())
    rate_ax = bottom.twinx()
    (rate,) = rate_ax.plot(ts, data["rate"], color="#2ca02c", lw=0.9, label="supply rate")
    rate_ax.set_ylabel("supply rate (% a year)")
    bottom.legend(handles=[used, rate], loc="upper left", fontsize=9)  # both axes' lines
    _title(top, "Lent collateral", subtitle)
    _dates(bottom, ts)
    return _save(fig, path)


def nav_fan(steps: pl.DataFrame, path: Path, initial_nav: float | None = None) -> Path:
    """NAV quantiles across paths at each timestamp (needs only path_id, ts, nav)."""
    nav = pl.col("nav")
    bands = (
        steps.group_by("ts")
        .agg(*[nav.quantile(q, "linear").alias(f"q{q}") for q in FAN_QUANTILES], mean=nav.mean())
        .sort("ts")
    )
    bands = _thin(bands, *[pl.col(c).last() for c in bands.columns if c != "ts"])
    n_paths = steps["path_id"].n_unique()
    fig, (ax,) = _figure()
    ts = bands["ts"].to_numpy()
    lo, q25, q50, q75, hi = (bands[f"q{q}"].to_numpy() for q in FAN_QUANTILES)
    ax.fill_between(ts, lo, hi, color="#1f77b4", alpha=0.18, lw=0, label="5–95 %")
    ax.fill_between(ts, q25, q75, color="#1f77b4", alpha=0.38, lw=0, label="25–75 %")
    ax.plot(ts, q50, color="#1f77b4", lw=1.6, label="median")
    ax.plot(ts, bands["mean"], color="black", lw=1.0, ls=":", label="mean")
    if initial_nav is not None:
        ax.axhline(initial_nav, color="#7f7f7f", lw=0.8, ls="--", label="initial NAV")
    _money(ax, np.concatenate([lo, hi]), "NAV")
    ax.legend(loc="upper left", fontsize=9)
    _title(ax, f"NAV across {n_paths:,} paths", "")
    _dates(ax, ts)
    return _save(fig, path)


def return_histogram(summary: pl.DataFrame, path: Path) -> Path:
    """LP return per path, with the mean, median and 95 % VaR marked."""
    returns = summary["lp_return"].drop_nulls().to_numpy() * 100.0
    var95, _ = tail_risk(returns, 0.95)
    fig, (ax,) = _figure()
    ax.hist(returns, bins=int(np.clip(np.sqrt(len(returns)), 10, 80)), color="#1f77b4", alpha=0.75)
    for value, colour, style, label in (
        (returns.mean(), "black", "-", f"mean {returns.mean():.2f} %"),
        (np.median(returns), "black", ":", f"median {np.median(returns):.2f} %"),
        (-var95, "#d62728", "--", f"95 % VaR: loss {var95:.2f} %"),
    ):
        ax.axvline(value, color=colour, ls=style, lw=1.2, label=label)
    ax.xaxis.set_major_formatter(PercentFormatter())
    ax.set_xlabel("LP return over the run (%)")
    ax.set_ylabel("paths")
    ax.legend(loc="upper left", fontsize=9)
    insolvent = float(summary["insolvent"].mean())
    _title(
        ax, f"LP return across {len(returns):,} paths", f"P(insolvent) = {100 * insolvent:.2f} %"
    )
    return _save(fig, path)


def representative_path(summary: pl.DataFrame) -> tuple[int, str]:
    """The path whose single-path plots stand for a multi-path run: the median LP return."""
    if summary.height == 1:
        return int(summary["path_id"][0]), ""
    ordered = summary.sort("lp_return", "path_id")
    pid = int(ordered["path_id"][(ordered.height - 1) // 2])
    return pid, f"path {pid} (median LP return of {summary.height:,})"


STEP_COLUMNS = (
    "path_id",
    "ts",
    "spot",
    "nav",
    "hedge_units",
    "book_delta",
    "net_delta",
    "book_vega",
    "listed_vega",
    "utilisation",
    "lent",
    "lent_locked",
    "lending_utilisation",
    "lending_rate",
    *PNL_COMPONENTS,
    "pnl_total",
    "shares",
    "nav_per_share",
)


def plot_run(folder: Path) -> list[Path]:
    """Write every plot of a run folder into `<folder>/plots/`; returns them in report order.

    A run that kept only its summaries (no steps.parquet) gets the plots the summary supports.
    """
    folder = Path(folder)
    out = folder / "plots"
    out.mkdir(exist_ok=True)
    summary = pl.read_parquet(folder / "summary.parquet")
    strategy = tomllib.loads((folder / "config.toml").read_text())["strategy"]
    hedge, pool = strategy.get("hedge", {}), strategy.get("pool", {})
    threshold = hedge.get("threshold") if hedge.get("policy") == "threshold" else None
    paths = []
    steps_file = folder / "steps.parquet"
    if steps_file.exists():
        pid, subtitle = representative_path(summary)
        one_path = pl.col("path_id") == pid
        steps = (
            pl.scan_parquet(steps_file)
            .filter(one_path)
            .select(cs.by_name(STEP_COLUMNS, require_all=False))  # older runs lack some columns
            .collect()
        )
        hedges = pl.scan_parquet(folder / "hedges.parquet").filter(one_path).collect()
        cap = pool.get("max_utilisation")
        paths += [
            nav_vs_spot(steps, out / "nav_spot.png", subtitle),
            attribution(steps, out / "attribution.png", subtitle),
            net_delta(steps, hedges, out / "net_delta.png", subtitle, threshold),
            vega_utilisation(steps, out / "vega_utilisation.png", subtitle, cap),
            drawdown(steps, out / "drawdown.png", subtitle),
        ]
        if "lent" in steps.columns and (steps["lent"] > 0).any():
            paths.append(lending(steps, out / "lending.png", subtitle))
        if summary.height > 1:
            all_paths = pl.read_parquet(steps_file, columns=["path_id", "ts", "nav"])
            initial = float(summary["initial_nav"][0])
            paths.append(nav_fan(all_paths, out / "nav_fan.png", initial))
    if summary.height > 1:
        paths.append(return_histogram(summary, out / "lp_returns.png"))
    return paths
