"""One self-contained HTML page per run: plots inlined as data URIs, no scripts, fonts or links to
fetch, so the file can be mailed, archived or opened offline and still shows everything."""

from __future__ import annotations

import base64
import math
import os
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import polars as pl

from backtest.kernel.types import PNL_COMPONENTS, REJECT_REASONS
from backtest.results.plots import plot_run
from backtest.results.summary import distribution

Formatter = Callable[[Any], str]


def _money(x: Any) -> str:
    return f"{round(x):,}"  # round() first: no "-0"


def _pct(x: Any) -> str:
    return f"{100 * x:.2f} %"


def _num(x: Any) -> str:
    return f"{x:,.2f}"


def _count(x: Any) -> str:
    return f"{x:,.0f}"


def _sci(x: Any) -> str:
    return f"{x:.1e}"


def _date(x: Any) -> str:
    return f"{x:%Y-%m-%d %H:%M}"


def _flag(x: Any) -> str:
    return "yes" if x else "no"


# (summary column, label, format); rows whose column an older run lacks are left out.
METRICS: tuple[tuple[str, str, Formatter], ...] = (
    ("final_nav", "final NAV (USD)", _money),
    ("lp_flow", "LP deposits less withdrawals (USD)", _money),
    ("lp_return", "LP return (NAV per share)", _pct),
    ("apy", "APY", _pct),
    ("volatility", "volatility of daily NAV returns (annualised)", _pct),
    ("sharpe", "Sharpe ratio (daily returns, annualised)", _num),
    ("max_drawdown", "max drawdown", _pct),
    ("max_drawdown_peak", "max drawdown: peak", _date),
    ("max_drawdown_trough", "max drawdown: trough", _date),
    ("max_drawdown_recovery", "max drawdown: recovered", _date),
    ("longest_underwater_days", "longest time under water (days)", _num),
    ("gamma_theta_ratio", "−gamma PnL / theta PnL", _num),
    ("n_flow", "flow rows", _count),
    ("n_trades", "trades filled (incl. partial)", _count),
    ("n_partial", "partial fills", _count),
    ("n_rejected", "rejected", _count),
    *[(f"n_rejected_{r}", f"rejected: {r}", _count) for r in REJECT_REASONS if r],
    *[(f"n_partial_{r}", f"partial: {r}", _count) for r in REJECT_REASONS if r],
    ("fill_ratio", "contracts filled / requested", _pct),
    ("notional_lost_to_reference", "flow lost to the reference venue (USD spot notional)", _money),
    ("fees_forgone", "fees the lost flow was quoted (USD)", _money),
    ("volume", "contracts traded", _num),
    ("n_hedges", "hedge trades", _count),
    ("hedge_volume", "hedge volume (underlying units)", _num),
    ("hedge_notional", "hedge notional (USD)", _money),
    ("hedge_cost", "hedge cost (USD)", _money),
    ("hedge_cost_bps", "hedge cost (bp of notional)", _num),
    ("hedge_cost_over_fees", "hedge cost / fees", _pct),
    ("n_vega_hedges", "vega hedge trades in listed options", _count),
    ("vega_hedged", "vega hedged, |contracts x vega| (USD per vol)", _money),
    ("vega_hedge_cost", "vega hedge cost: spread and exchange fees (USD)", _money),
    ("pnl_vega_hedge", "PnL of the listed options held as vega hedge (USD)", _money),
    ("vega_taken", "vega risk taken, |contracts x vega| (USD per vol)", _money),
    ("fees_vega", "vega-utilisation fees (USD)", _money),
    ("fees_per_vega", "fees per unit of vega taken", _num),
    ("n_informed", "fills by informed traders", _count),
    ("pnl_informed", "PnL from informed fills, held to expiry (USD)", _money),
    ("pnl_noise", "PnL from noise fills, held to expiry (USD)", _money),
    ("max_utilisation", "max utilisation", _pct),
    ("mean_utilisation", "mean utilisation", _pct),
    ("min_free_cash", "lowest free cash (USD)", _money),
    ("peak_leverage", "peak leverage, (NAV + debt) / NAV", _num),
    ("n_liquidations", "liquidation closes", _count),
    ("liquidation_volume", "contracts liquidated", _num),
    ("max_collateral_gap", "largest collateral gap liquidation left (USD)", _money),
    ("n_gap_ticks", "ticks with a collateral gap", _count),
    ("lp_deposits", "LP deposits (USD)", _money),
    ("lp_withdrawals", "LP withdrawals paid (USD)", _money),
    ("n_withdrawals", "LP withdrawals paid", _count),
    ("lp_unwind_cost", "closes forced by exits, paid by the leavers (USD)", _money),
    ("lp_withdrawal_fees", "withdrawal fees kept by the stayers (USD)", _money),
    ("n_lp_rejected", "LP rows refused (pool empty or insolvent)", _count),
    ("insolvent", "insolvent", _flag),
    ("insolvency_ts", "insolvent since", _date),
    ("bad_debt", "bad debt (USD)", _money),
    ("residual_share", "Taylor residual / |option PnL|", _pct),
    ("reconcile_max_abs", "largest NAV reconciliation error (USD)", _sci),
)
BY_REASON = ("n_rejected_", "n_partial_")  # shown only for reasons that occurred
DISTRIBUTION: tuple[tuple[str, str, Formatter], ...] = (
    ("lp_return_mean", "LP return: mean", _pct),
    ("lp_return_std", "LP return: standard deviation", _pct),
    ("lp_return_q05", "LP return: 5 % quantile", _pct),
    ("lp_return_q25", "LP return: 25 % quantile", _pct),
    ("lp_return_q50", "LP return: median", _pct),
    ("lp_return_q75", "LP return: 75 % quantile", _pct),
    ("lp_return_q95", "LP return: 95 % quantile", _pct),
    ("var_95", "VaR 95 % (loss, share of initial NAV)", _pct),
    ("es_95", "expected shortfall 95 %", _pct),
    ("var_99", "VaR 99 %", _pct),
    ("es_99", "expected shortfall 99 %", _pct),
    ("p_insolvent", "probability of insolvency", _pct),
    ("mean_max_drawdown", "mean max drawdown", _pct),
    ("mean_bad_debt", "mean bad debt (USD)", _money),
)
CAPTIONS = {
    "nav_spot": "Pool NAV (left axis) against the underlying's spot price (right axis).",
    "attribution": "Cumulative PnL by component; the black line is the total.",
    "net_delta": "Top: the option book's delta, the hedge position and each hedge trade. "
    "Bottom: the delta left after hedging, as a share of NAV, against the hedge band.",
    "vega_utilisation": "Top: book vega in USD per vol point (with a vega hedge, the line is the "
    "flow's book before it). "
    "Bottom: collateral required as a share of NAV, against the utilisation cap.",
    "drawdown": "Distance of NAV per share below its running peak.",
    "lending": "Top: free collateral supplied to the money market, and the part it could not "
    "repay (locked). Bottom: the market's utilisation and the supply rate the pool earned.",
    "nav_fan": "NAV quantiles across paths at each timestamp.",
    "lp_returns": "LP return per path, with the mean, median and 95 % VaR.",
}

TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{ name }} · {{ run_id }}</title>
<style>
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222;
       max-width: 1180px; margin: 2em auto; padding: 0 1.5em; line-height: 1.45; }
h1 { margin-bottom: 0.1em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
.description { color: #555; margin-top: 0; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.93em; }
th, td { padding: 0.25em 0.9em; border-bottom: 1px solid #eee; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { border-bottom: 2px solid #ccc; }
tr.total td { font-weight: bold; border-top: 2px solid #ccc; }
td.neg { color: #b22; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; height: auto; }
figcaption { color: #555; font-size: 0.9em; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: 0.85em; }
.note { color: #666; font-size: 0.9em; }
</style>
</head>
<body>
<h1>{{ name }}</h1>
<p class="description">{{ description }}</p>
<table>
{% for label, value in facts %}<tr><th>{{ label }}</th><td>{{ value }}</td></tr>
{% endfor %}</table>

<h2>Key metrics</h2>
{% if n_paths > 1 %}<p class="note">Statistics across {{ paths }} paths.</p>{% endif %}
<table>
<thead><tr><th>metric</th>{% for h in metric_header %}<th>{{ h }}</th>{% endfor %}</tr></thead>
<tbody>
{% for label, values in metrics %}<tr><td>{{ label }}</td>
{%- for v in values %}<td>{{ v }}</td>{% endfor %}</tr>
{% endfor %}</tbody>
</table>

{% if distribution %}<h2>Distribution across paths</h2>
<table>
{% for label, value in distribution %}<tr><td>{{ label }}</td><td>{{ value }}</td></tr>
{% endfor %}</table>
<p class="note">VaR and expected shortfall are historical over paths, as losses of LP return:
VaR is the k-th worst return, ES the mean of the k worst, k = ceil(paths × (1 − level)).</p>
{% endif %}

<h2>PnL attribution</h2>
{% if n_paths > 1 %}<p class="note">Means across paths.</p>{% endif %}
<table>
<thead><tr><th>component</th><th>USD</th><th>share of total PnL</th>
<th>share of initial NAV</th></tr></thead>
<tbody>
{% for row in attribution %}<tr{% if row.total %} class="total"{% endif %}>
<td>{{ row.name }}</td><td{% if row.negative %} class="neg"{% endif %}>{{ row.usd }}</td>
<td>{{ row.share }}</td><td>{{ row.of_nav }}</td></tr>
{% endfor %}</tbody>
</table>

<h2>Plots</h2>
{% for plot in plots %}<figure>
<img src="data:image/png;base64,{{ plot.data }}" alt="{{ plot.name }}">
<figcaption>{{ plot.caption }}</figcaption>
</figure>
{% endfor %}

<h2>Resolved strategy</h2>
<details><summary>config.toml</summary>
<pre>{{ config }}</pre>
</details>
<p class="note">dhlp {{ engine }}</p>
</body>
</html>
"""


def _value(fmt: Formatter, x: Any) -> str:
    missing = x is None or (isinstance(x, float) and math.isnan(x))
    return "–" if missing else fmt(x)


def _metric_rows(summary: pl.DataFrame) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """One value column for a single path; mean and quantiles across paths otherwise."""
    present = [
        (k, label, fmt)
        for k, label, fmt in METRICS
        if k in summary.columns and not (k.startswith(BY_REASON) and summary[k].sum() == 0)
    ]
    if summary.height == 1:
        row = summary.row(0, named=True)
        return ["value"], [(label, [_value(fmt, row[k])]) for k, label, fmt in present]
    rows = []
    for key, label, fmt in present:
        column = summary[key].drop_nulls()
        if column.dtype == pl.Boolean:
            rows.append((f"{label} (share of paths)", [_pct(column.mean())] + ["–"] * 3))
        elif column.dtype.is_numeric():
            values = column.cast(pl.Float64).to_numpy()
            stats = [values.mean(), *np.quantile(values, (0.05, 0.5, 0.95))] if len(values) else []
            rows.append((label, [_value(fmt, float(s)) for s in stats] or ["–"] * 4))
    return ["mean", "5 %", "median", "95 %"], rows


def _attribution_rows(summary: pl.DataFrame) -> list[dict]:
    means = summary.select(pl.col(*PNL_COMPONENTS, "pnl_total").mean()).row(0, named=True)
    total, initial = means["pnl_total"], float(summary["initial_nav"][0])
    rows = []
    for name, usd in means.items():
        rows.append(
            {
                "name": "total" if name == "pnl_total" else name.removeprefix("pnl_"),
                "usd": _money(usd),
                "share": _pct(usd / total) if total else "–",
                "of_nav": _pct(usd / initial),
                "negative": usd < 0,
                "total": name == "pnl_total",
            }
        )
    return rows


def _without_local_paths(config_text: str) -> str:
    """The resolved config as shown in a report: absolute file paths cut to their names."""
    return re.sub(r'"(/[^"]*/)([^/"]+)"', r'"\2"', config_text)


def _file(path: str | None, sha256: str | None) -> str:
    """A data file as its name and the start of its hash: a report is shared, local paths are
    not (config.toml keeps them for reruns)."""
    if not path:
        return "–"
    if not sha256 or sha256 == path:  # "synthetic"
        return Path(path).name
    return f"{Path(path).name} (sha256 {sha256[:12]}…)"


def build_report(folder: Path) -> Path:
    """(Re)draw the plots and write `<folder>/report.html`; returns its path."""
    folder = Path(folder)
    config_text = (folder / "config.toml").read_text()
    config = tomllib.loads(config_text)
    strategy, facts_run = config.get("strategy", {}), config.get("run", {})
    run_id = facts_run.get("run_id", folder.name)  # the folder may still be a temporary one
    summary = pl.read_parquet(folder / "summary.parquet")
    plots = plot_run(folder)
    n_paths = summary.height
    data = strategy.get("data", {})
    facts = [
        ("run", run_id),
        ("data", f"{_date(summary['start'].min())} → {_date(summary['end'].max())} UTC"),
        ("ticks per path", _count(summary["n_ticks"].max())),
        ("paths", _count(n_paths)),
        ("market", _file(data.get("market"), facts_run.get("market_sha256"))),
        ("flow", _file(data.get("flow"), facts_run.get("flow_sha256"))),
        ("seed", str(facts_run.get("seed", "–"))),
        ("initial capital (USD)", _money(summary["initial_nav"][0])),
    ]
    header, metrics = _metric_rows(summary)
    dist = distribution(summary) if n_paths > 1 else {}
    html = (
        jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
        .from_string(TEMPLATE)
        .render(
            name=strategy.get("name", run_id),
            description=strategy.get("description", ""),
            run_id=run_id,
            facts=facts,
            n_paths=n_paths,
            paths=_count(n_paths),
            metric_header=header,
            metrics=metrics,
            distribution=[(label, _value(fmt, dist[k])) for k, label, fmt in DISTRIBUTION if dist],
            attribution=_attribution_rows(summary),
            plots=[
                {
                    "name": p.stem,
                    "caption": CAPTIONS.get(p.stem, ""),
                    "data": base64.b64encode(p.read_bytes()).decode("ascii"),
                }
                for p in plots
            ],
            config=_without_local_paths(config_text),
            engine=facts_run.get("engine_version", "–"),
        )
    )
    target = folder / "report.html"
    tmp = folder / ".report.html.tmp"
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, target)
    return target
