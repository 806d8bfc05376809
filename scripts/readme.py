"""Regenerate README.md's tables, measured paragraphs and charts from runs of this engine.

`python scripts/readme.py` prints every block; `--write` puts each in README.md between its
`<!-- readme:NAME -->` and `<!-- /readme:NAME -->` markers and redraws docs/attacks.png and
docs/lp-run.png; `--check` exits 1 with a diff when README.md differs. Runs are ordinary run
folders in `<--reports>/runs` (default reports/runs, git-ignored), so a second call reuses them by
run_id. The strategy table is read from the baselines, which `dhlp regress` holds to the engine.
"""

from __future__ import annotations

import argparse
import difflib
import multiprocessing
import re
import sys
import textwrap
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from backtest import regress, runner, sweep
from backtest.config import load_strategy

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
STRATEGIES = ROOT / "strategies"

# A run: a bundled strategy and its `--set` overrides (dotted keys).
Spec = tuple[str, dict[str, Any]]

# (label, strategy, overrides): the attacks table's rows and the chart's bars, top to bottom.
LENDING = "lent-collateral-squeeze"
NO_WRITE_OFF = {"lending.bad_debt_share": 0.0}
NO_SQUEEZE = {"lending.squeeze_days": 0.0}
ATTACKS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("`default`", "default", {}),
    (
        "`thin-venue` (20 M cpmm, 30 bp fee, arbitrage half-life 6 h)",
        "thin-venue",
        {},
    ),
    (
        "↳ `slippage.arb_half_life=0` (re-anchored every trade)",
        "thin-venue",
        {"slippage.arb_half_life": 0.0},
    ),
    (
        "↳ `slippage.arb_half_life=inf` (no arbitrage at all)",
        "thin-venue",
        {"slippage.arb_half_life": float("inf")},
    ),
    ("`sandwiched-hedges` (50 M cpmm, every-trade hedges, public)", "sandwiched-hedges", {}),
    (
        "↳ `mev.random_delay=3` (each hedge 0–3 h late)",
        "sandwiched-hedges",
        {"mev.random_delay": 3},
    ),
    ("↳ `mev.max_slippage=0.002`", "sandwiched-hedges", {"mev.max_slippage": 0.002}),
    ("↳ `mev.model=none` (no attacker)", "sandwiched-hedges", {"mev.model": "none"}),
    ("`private-hedges` (private submission, 3 bp)", "private-hedges", {}),
    (
        "`stale-oracle` (1 h behind, 0.5 % / 24 h; 10 % stale-quote traders)",
        "stale-oracle",
        {},
    ),
    ("↳ `flow.stale_fraction=0`", "stale-oracle", {"flow.stale_fraction": 0.0}),
    (
        "`lent-collateral-squeeze` (BTC 2022, full collateral, market pinned at 100 % on 8–12 Nov)",
        "lent-collateral-squeeze",
        {},
    ),
    ("↳ `lending.bad_debt_share=0` (no write-off)", "lent-collateral-squeeze", NO_WRITE_OFF),
    ("↳ `lending.squeeze_days=0` (no squeeze)", "lent-collateral-squeeze", NO_SQUEEZE),
    ("↳ `lending.share=0`", "lent-collateral-squeeze", {"lending.share": 0.0}),
)

# (label, strategy, overrides, the unhedged strategy whose vol PnL variance it is compared with)
VEGA: tuple[tuple[str, str, dict[str, Any], str], ...] = (
    ("`default` (ETH 2022–23)", "default", {}, "default"),
    ("`vega-hedged` (band, 30-day)", "vega-hedged", {}, "default"),
    ("same, `tenor_matched`", "vega-hedged", {"vega_hedge.policy": "tenor_matched"}, "default"),
    ("`vega-limit`", "vega-limit", {}, "default"),
    (
        "`btc-2022-dynamic-collateral`",
        "btc-2022-dynamic-collateral",
        {},
        "btc-2022-dynamic-collateral",
    ),
    (
        "`vega-hedged-btc-2022` (`tenor_matched`)",
        "vega-hedged-btc-2022",
        {},
        "btc-2022-dynamic-collateral",
    ),
    (
        "same, `band`",
        "vega-hedged-btc-2022",
        {"vega_hedge.policy": "band"},
        "btc-2022-dynamic-collateral",
    ),
    ("`vega-limit-btc-2022`", "vega-limit-btc-2022", {}, "btc-2022-dynamic-collateral"),
)
VOL_PNL = ("pnl_vega", "pnl_volga", "pnl_vanna")
# Each 2022 crash as a window (UTC): the deepest fall of NAV per share from its high in it.
CRASHES = {
    "LUNA": ("2022-05-07", "2022-06-01"),
    "3AC": ("2022-06-10", "2022-07-10"),
    "FTX": ("2022-11-06", "2022-12-01"),
}

FEES = [0.0, 0.0025, 0.005, 0.01, 0.02, 0.04]
BANDS = [0.005, 0.02, 0.1]
DEFAULT_BAND = 0.02  # default.toml's hedge.threshold: the band whose fees the table shows
FIXED_FLOW_FEES = (0.005, 0.01, 0.02)
NOTIONAL_PER_NAV = (0.05, 0.1, 0.2)
YIELD_CHASING = {"lp.benchmark_apy": 0.05, "lp.deposit_elasticity": 1.0}
# lp-run-btc-2022 as it was before the flow followed NAV: absolute flow, runs at every 5 %.
ABSOLUTE_RUN = {"flow.notional_per_nav": 0.0, "lp.run_drawdown": 0.05}
LP_RUN = {
    "btc-2022-dynamic-collateral": "LPs stay",
    "lp-run-btc-2022": "LPs run at each 1 % drawdown",
}
DATA = {  # bundled file: what its range covers
    "eth_1h.parquet": "",
    "btc_1h.parquet": " (May 2021, LUNA, FTX)",
    "eth_1d.parquet": "",
    "btc_1d.parquet": "",
}


def usd(value: float) -> str:
    """Three significant figures, as prose reads money: 1.22 M, 649 k, 6.1 k."""
    size = abs(value)
    if size >= 1e6:
        return f"{value / 1e6:.3g} M"
    return f"{value / 1e3:.3g} k" if size >= 1e3 else f"{value:.3g}"


def pct(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{100 * value:.{digits}f} %"


def fee_label(fee: float) -> str:
    return f"{100 * fee:g} %" if fee else "0"


class Runs:
    """Run folders under one reports root: each spec runs once, in a pool of spawned processes
    when `prefetch`ed (one numba thread each, as `dhlp sweep` runs its points), else here."""

    def __init__(self, reports: Path, jobs: int = 2) -> None:
        self.out = reports / "runs"
        self.jobs = jobs

    def get(self, strategy: str, overrides: dict[str, Any] | None = None) -> runner.Run:
        changes = {k.replace(".", "__"): v for k, v in (overrides or {}).items()}
        return runner.run(STRATEGIES / f"{strategy}.toml", out=self.out, **changes)

    def summary(self, strategy: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.get(strategy, overrides).summary.row(0, named=True)

    def prefetch(self, specs: list[Spec]) -> None:
        """Runs each distinct run_id once: two spellings of one run must not race for a folder."""
        calls = {}
        for name, params in specs:
            path = STRATEGIES / f"{name}.toml"
            run_id = runner.prepare(path, overrides=params).run_id
            calls.setdefault(run_id, (path, params, None, self.out, "all", 1))
        calls = list(calls.values())
        if self.jobs == 1:
            for call in calls:
                sweep.run_point(*call)
            return
        context = multiprocessing.get_context("spawn")  # numba's threads do not survive a fork
        with ProcessPoolExecutor(self.jobs, mp_context=context) as pool:
            list(pool.map(sweep.run_point, *zip(*calls, strict=True)))

    def sweep(self, strategy: str, grid: dict[str, list[Any]]) -> pl.DataFrame:
        return sweep.sweep(STRATEGIES / f"{strategy}.toml", grid, out=self.out, jobs=1).frame


def every_run() -> list[Spec]:
    """Every run a block reads, so `prefetch` can spread them over the cores first."""
    specs: list[Spec] = [(name, overrides) for _, name, overrides in ATTACKS]
    specs += [(name, overrides) for _, name, overrides, _ in VEGA]
    specs += [(name, {}) for name in LP_RUN] + [("lp-run-btc-2022", ABSOLUTE_RUN)]
    specs += [("default", {"pricing.base_fee": fee}) for fee in FIXED_FLOW_FEES]
    specs += [("default", YIELD_CHASING)]
    specs += [
        ("btc-2022-dynamic-collateral", {"flow.notional_per_nav": n}) for n in NOTIONAL_PER_NAV
    ]
    specs += [
        ("fee-elasticity", {"pricing.base_fee": fee, "hedge.threshold": band})
        for fee in FEES
        for band in BANDS
    ]
    return specs


# -- blocks: each returns the Markdown that stands between its markers ---------------------------


def default_run(runs: Runs) -> str:
    s = runs.summary("default")
    cap = load_strategy(STRATEGIES / "default.toml").pool.max_utilisation
    trough = s["max_drawdown_trough"].strftime("%-d %B %Y")
    return (
        f"Measured on the default run (`dhlp run`): {s['n_ticks']:,} hourly ticks, "
        f"{s['n_trades']:,} fills ({s['n_rejected']:,} rejected, "
        f"{s['n_rejected_utilisation']:,} of them at the pool's {pct(cap, 0)} utilisation cap), "
        f"{s['n_hedges']:,} hedges; NAV {usd(s['initial_nav'])} → {usd(s['final_nav'])} "
        f"(APY {pct(s['apy'])}, max drawdown {pct(s['max_drawdown'])}, deepest on {trough}); "
        f"theta {usd(s['pnl_theta'])} against gamma {usd(s['pnl_gamma'])}, vega "
        f"{usd(s['pnl_vega'])}, fees {usd(s['pnl_fees'])}, hedging {usd(s['pnl_hedge_cost'])} "
        f"({pct(s['hedge_cost_over_fees'], 0)} of fees). Free cash never fell below "
        f"{usd(s['min_free_cash'])}; {s['n_liquidations']} liquidations. The largest per-tick "
        f"reconciliation error is {s['reconcile_max_abs']:.0e} USD; the Taylor residual is "
        f"{pct(s['residual_share'])} of the absolute per-tick option PnL (`residual_share`).\n"
    )


def strategies(runs: Runs) -> str:
    return regress.markdown_table(regress.load_baselines(STRATEGIES / "baselines"))


def notional(runs: Runs) -> str:
    rows = [
        runs.summary("btc-2022-dynamic-collateral", {"flow.notional_per_nav": n})
        for n in NOTIONAL_PER_NAV
    ]
    apys = ", ".join(
        f"{pct(s['apy'])} at {n:g}" for n, s in zip(NOTIONAL_PER_NAV, rows, strict=True)
    )
    bps = ", ".join(f"{1e4 * s['pnl_total'] / s['notional_written']:.0f}" for s in rows)
    eth = runs.summary("default")
    days = (eth["end"] - eth["start"]).total_seconds() / 86_400
    eth_share = eth["notional_written"] / eth["initial_nav"] / days
    return (
        "APYs scale with the flow: `[flow] notional_per_nav` is the option notional the pool "
        "writes a day per unit of NAV, and `btc-2022-dynamic-collateral` earns "
        f"{apys} (`--set flow.notional_per_nav=...`), while its return per unit of notional "
        f"written stays at {bps} bp. The ETH strategies trade absolute flow, "
        f"{pct(eth_share)} of NAV a day on the default year; compare strategies whose flow "
        "differs in size by return / notional (`pnl_total / notional_written`).\n"
    )


def fixed_fee(runs: Runs) -> str:
    rows = [runs.summary("default", {"pricing.base_fee": fee}) for fee in FIXED_FLOW_FEES]
    apys = ", ".join(
        f"{pct(s['apy'])} at {fee_label(fee)}" for fee, s in zip(FIXED_FLOW_FEES, rows, strict=True)
    )
    return (
        "With every trader taking whatever the pool charges, a higher fee only ever raises LP "
        f"return (`default`, `--set pricing.base_fee=...`: {apys}).\n"
    )


def fee_elasticity(runs: Runs) -> str:
    frame = runs.sweep("fee-elasticity", {"pricing.base_fee": FEES, "hedge.threshold": BANDS})

    def at(fee: float, band: float) -> dict[str, Any]:
        point = frame.filter(
            (pl.col("pricing.base_fee") == fee) & (pl.col("hedge.threshold") == band)
        )
        return point.row(0, named=True)

    lines = [
        "| base fee | " + " | ".join(fee_label(f) for f in FEES) + " |",
        "|---|" + "---:|" * len(FEES),
    ]
    best = {band: max(FEES, key=lambda f, b=band: at(f, b)["apy"]) for band in BANDS}
    for band in BANDS:
        name = f"band {fee_label(band)} of NAV" + (" (default)" if band == DEFAULT_BAND else "")
        cells = [
            f"**{pct(at(f, band)['apy'])}**" if f == best[band] else pct(at(f, band)["apy"])
            for f in FEES
        ]
        lines.append(f"| APY, {name} | " + " | ".join(cells) + " |")
    default = [at(f, DEFAULT_BAND) for f in FEES]
    n_flow = default[0]["n_flow"]
    lines.append(
        f"| rows lost on price (of {n_flow:,}) | "
        + " | ".join(f"{p['n_rejected_price']:,}" for p in default)
        + " |"
    )
    lines.append("| fee income | " + " | ".join(usd(p["pnl_fees"]) for p in default) + " |")
    lines.append("| fees forgone | " + " | ".join(usd(p["fees_forgone"]) for p in default) + " |")
    peak_income = max(FEES, key=lambda f: at(f, DEFAULT_BAND)["pnl_fees"])
    sharpe = max(((f, b) for f in FEES for b in BANDS), key=lambda fb: at(*fb)["sharpe"])
    optimum = ", ".join(f"{fee_label(best[b])} (band {fee_label(b)})" for b in BANDS)
    lines += [
        "",
        f"Best APY in each band: {optimum}; fee income (band {fee_label(DEFAULT_BAND)}) peaks at "
        f"{fee_label(peak_income)}; the best Sharpe ratio ({at(*sharpe)['sharpe']:.1f}) is band "
        f"{fee_label(sharpe[1])} at a "
        f"{fee_label(sharpe[0])} fee. Fee income and rows lost are the "
        f"{fee_label(DEFAULT_BAND)} band's.",
    ]
    return "\n".join(lines) + "\n"


def vol_pnl_sd(run: runner.Run) -> float:
    """Standard deviation of the vol-driven PnL's daily sums."""
    daily = (
        run.steps.sort("ts")
        .group_by_dynamic("ts", every="1d")
        .agg(pl.sum_horizontal(*VOL_PNL).sum().alias("pnl"))
    )
    return float(daily["pnl"].std())


def crash_drawdowns(run: runner.Run) -> str:
    """The deepest fall of NAV per share from its high within each crash window the run covers."""
    steps = run.steps.filter(pl.col("shares") > 0)
    cells = []
    for first, last in CRASHES.values():
        start, end = (datetime.fromisoformat(day).replace(tzinfo=UTC) for day in (first, last))
        if steps["ts"].min() > start or steps["ts"].max() < end:
            cells.append("—")
            continue
        per_share = steps.filter(pl.col("ts").is_between(start, end, closed="left"))[
            "nav_per_share"
        ]
        cells.append(f"{100 * (1 - per_share / per_share.cum_max()).max():.1f}")
    return " / ".join(cells) + " %"


def vega(runs: Runs) -> str:
    lines = [
        "| strategy | vol PnL, daily sd | of unhedged variance | vega hedge cost / fees | APY "
        "| max drawdown | " + " / ".join(CRASHES) + " drawdown |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for label, name, overrides, unhedged in VEGA:
        run = runs.get(name, overrides)
        s = run.summary.row(0, named=True)
        sd, sd0 = vol_pnl_sd(run), vol_pnl_sd(runs.get(unhedged))
        cost = s["vega_hedge_cost"] / s["pnl_fees"] if s["vega_hedge_cost"] else None
        cells = [
            label,
            usd(sd),
            pct((sd / sd0) ** 2, 0 if sd >= sd0 / 3 else 1),
            pct(cost),
            pct(s["apy"]),
            pct(s["max_drawdown"]),
            crash_drawdowns(run),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    windows = "; ".join(f"{k} {a} → {b}" for k, (a, b) in CRASHES.items())
    hedged, unhedged = runs.summary("vega-hedged"), runs.summary("default")
    net = hedged["pnl_vega_hedge"] - hedged["pnl_vega_hedge_delta"]
    limit = runs.summary("vega-limit-btc-2022")
    lines += [
        "",
        f"Crash windows (UTC, end excluded): {windows}; — where the run does not cover one. The "
        f"listed options the ETH hedge buys lose {usd(-hedged['pnl_vega_hedge'])} in greeks over "
        f"the year (`pnl_vega_hedge`), but {usd(-hedged['pnl_vega_hedge_delta'])} of that is "
        "their delta PnL, which the delta hedge offsets (`pnl_vega_hedge_delta`): net of it they "
        f"cost {usd(-net)}, {usd(-hedged['pnl_vega_hedge_carry'])} of it the variance premium "
        f"they hand back (gamma and theta) and {usd(-hedged['pnl_vega_hedge_vol'])} their vol "
        f"PnL, against the unhedged book's theta of {usd(unhedged['pnl_theta'])}; on BTC the "
        "vega limit turns away "
        f"{pct(limit['n_rejected_vega_limit'] / limit['n_flow'], 0)} of the rows and cuts "
        f"{pct(limit['n_partial_vega_limit'] / limit['n_flow'], 0)}.",
    ]
    return "\n".join(lines) + "\n"


def oracle_mispricing(run: runner.Run) -> float:
    """What all fills gained from being quoted on the oracle instead of the market."""
    return float(run.trades.filter(pl.col("filled") > 0)["oracle_gap"].sum())


def attack_cells(run: runner.Run) -> str:
    """Where the money went, each measure only where the run has it."""
    s = run.summary.row(0, named=True)
    parts = [f"slippage {usd(s['hedge_slippage'])}"] if s["hedge_slippage"] else []
    if s["n_sandwiched"]:
        parts.append(
            f"MEV {usd(s['hedge_mev'])}, attacker keeps {usd(s['attacker_pnl'])}; "
            f"{s['n_sandwiched']:,} of {s['n_hedges']:,} hedges sandwiched"
        )
    elif s["hedge_mev"]:
        parts.append(f"private-submission fees {usd(s['hedge_mev'])}")
    if s["n_stale_trades"]:
        take = s["oracle_arb_pnl"]
        parts.append(
            f"stale-quote traders {usd(take)} net of fees and impact ({pct(take / s['pnl_fees'])})"
        )
    gap = oracle_mispricing(run)
    if gap:
        parts.append(f"mispricing on all fills {usd(gap)}")
    if s["lending_yield"]:
        locked = s["n_rejected_collateral_locked"] + s["n_partial_collateral_locked"]
        parts.append(
            f"lending yield {usd(s['lending_yield'])}; {locked} rows refused or cut "
            f"`collateral_locked`; recall blocked {s['n_recall_blocked']} ticks"
        )
    if s["pnl_credit"]:
        parts.append(f"written off {usd(-s['pnl_credit'])}")
    return "; ".join(parts) or "—"


def attacks(runs: Runs) -> str:
    lines = [
        "| strategy | APY | fees | hedge cost | of fees | delta PnL | theta | where it went |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for label, name, overrides in ATTACKS:
        run = runs.get(name, overrides)
        s = run.summary.row(0, named=True)
        cells = [
            label,
            pct(s["apy"]),
            usd(s["pnl_fees"]),
            usd(-s["pnl_hedge_cost"]),
            pct(s["hedge_cost_over_fees"], 0),
            usd(s["pnl_delta"]),
            usd(s["pnl_theta"]),
            attack_cells(run),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def attack_figures(runs: Runs) -> str:
    def row(name: str, **overrides: Any) -> dict[str, Any]:
        return runs.summary(name, {k.replace("__", "."): v for k, v in overrides.items()})

    sandwiched, delayed = row("sandwiched-hedges"), row("sandwiched-hedges", mev__random_delay=3)
    capped, private = row("sandwiched-hedges", mev__max_slippage=0.002), row("private-hedges")
    venue, anchored = row("thin-venue"), row("thin-venue", slippage__arb_half_life=0.0)
    no_arb = row("thin-venue", slippage__arb_half_life=float("inf"))
    venue_fee = load_strategy(STRATEGIES / "thin-venue.toml").slippage.fee_bps / 1e4
    stale, honest, default = (
        row("stale-oracle"),
        row("stale-oracle", flow__stale_fraction=0.0),
        row("default"),
    )
    mispricing = oracle_mispricing(runs.get("stale-oracle"))
    return (
        f"**Sandwiches** take {sandwiched['hedge_mev'] / sandwiched['pnl_fees']:.1f} times the fee "
        "income from a pool that hedges every trade through a public 50 M AMM: "
        f"{usd(sandwiched['hedge_mev'])} lost to front-running, "
        f"{usd(sandwiched['attacker_pnl'])} of it kept by the attacker. Private submission "
        f"recovers it for {usd(private['hedge_mev'])} "
        f"of fees, but leaves a pool that still pays {usd(private['hedge_slippage'])} of slippage "
        f"and earns {pct(private['apy'])}. A slippage cap on each hedge (0.2 %) leaves "
        f"{capped['n_sandwiched']:,} hedges sandwiched, saves "
        f"{usd(sandwiched['hedge_slippage'] - capped['hedge_slippage'])} of slippage for "
        f"{usd(sandwiched['pnl_delta'] - capped['pnl_delta'])} of delta PnL on the delta it leaves "
        f"open ({capped['unfilled_delta_days'] / days(capped):.1f} ETH on average, "
        "`unfilled_delta_days` over the run's days), and the APY is "
        f"{pct(capped['apy'])}; a random delay of up to three hours saves "
        f"{pct(1 - delayed['hedge_mev'] / sandwiched['hedge_mev'], 0)} of the MEV. A **thin venue "
        f"that remembers** the pool's own trades costs "
        f"{usd(anchored['pnl_hedge_cost'] - venue['pnl_hedge_cost'])} more than one re-anchored "
        "every trade. With no arbitrage at all (`--set slippage.arb_half_life=inf`) the venue's "
        "gap to spot moves only with the pool's own hedges, so a hedge that reverses an earlier "
        "one trades back along the curve and recovers most of what that one paid: the bill is "
        f"{pct(no_arb['hedge_slippage'] / venue['hedge_slippage'], 0)} of the 6 h venue's, "
        f"{usd(venue_fee * no_arb['hedge_notional'])} of it the venue's "
        f"{1e4 * venue_fee:g} bp fee. "
        f"**Stale-quote traders** on an oracle an hour behind take "
        f"{pct(stale['oracle_arb_pnl'] / stale['pnl_fees'], 0)} of the fee income net of the "
        "fees and impact they pay, and the oracle's mispricing on all fills is "
        f"{usd(mispricing)}; the oracle alone, "
        f"with honest traders, costs {100 * (default['apy'] - honest['apy']):.1f} points of APY "
        "(hedging a stale delta more than mispricing: compare their delta PnL). "
        + lending_figures(runs)
    )


def days(summary: dict[str, Any]) -> float:
    return (summary["end"] - summary["start"]).total_seconds() / 86_400


def lending_figures(runs: Runs) -> str:
    """The squeeze's cost, and who pays the pool's yield."""
    squeeze, no_loss = runs.summary(LENDING), runs.summary(LENDING, NO_WRITE_OFF)
    calm, off = runs.summary(LENDING, NO_SQUEEZE), runs.summary(LENDING, {"lending.share": 0.0})
    locked = squeeze["n_rejected_collateral_locked"] + squeeze["n_partial_collateral_locked"]
    return (
        f"**Lending** the free collateral to a 50 M money market earns "
        f"{usd(calm['lending_yield'])} over May–December 2022 without a squeeze "
        f"(+{100 * (calm['apy'] - off['apy']):.1f} points of APY), "
        f"{pct(calm['lending_yield'] / calm['lending_borrow_interest'])} of what all that "
        "market's borrowers paid: its own supply dilutes the utilisation it earns on. The "
        "five-day squeeze in FTX week, when the market repays nothing, costs "
        f"{100 * (calm['apy'] - squeeze['apy']):.1f} points: the pool refuses or cuts {locked} "
        "rows it could not back, its one leaver waits, locked cash beyond cash in hand shows as "
        f"a collateral gap on {squeeze['n_gap_ticks']} ticks, and when the squeeze ends "
        f"{usd(-squeeze['pnl_credit'])} (5 % of what it had lent) is written off. Without that "
        f"write-off the squeeze would look like a gain ({pct(no_loss['apy'])} against "
        f"{pct(calm['apy'])} without it): the 100 %-utilisation rate is paid at face value on "
        "cash nobody can recall, so the credit risk is the cost.\n"
    )


def lp_run(runs: Runs) -> str:
    stay, leave = (runs.get(name) for name in LP_RUN)
    s, r = stay.summary.row(0, named=True), leave.summary.row(0, named=True)
    paid = leave.lp.filter(pl.col("event") == "withdrawal")
    dates = ", ".join(paid["ts"].dt.strftime("%-d %b").to_list())

    def december(run: runner.Run) -> float:
        fills = run.trades.filter((pl.col("filled") > 0) & (pl.col("ts").dt.month() == 12))
        return float((fills["filled"] * fills["spot"]).sum())

    buybacks = leave.liquidations.filter(pl.col("reason") == "withdrawal").height
    return (
        f"Measured: {paid.height} withdrawals ({dates}) paid {usd(r['lp_withdrawals'])} and the "
        f"pool ends the year with {usd(r['final_nav'])} against {usd(s['final_nav'])} for the "
        "patient pool. The flow follows NAV (`notional_per_nav`), so the emptier pool also writes "
        f"less ({usd(december(leave))} of options in December against {usd(december(stay))}); "
        f"dynamic collateral never needed more than {pct(r['max_utilisation'], 0)} of NAV, the "
        f"exits forced {buybacks} buybacks, and the {usd(r['lp_withdrawal_fees'])} of "
        "fees the leavers left behind stayed with the LPs who remained: NAV per share "
        f"{1 + r['lp_return']:.3f} against {1 + s['lp_return']:.3f} for the patient pool at the "
        "end.\n"
    )


def lp_run_absolute(runs: Runs) -> str:
    s = runs.summary("lp-run-btc-2022", ABSOLUTE_RUN)
    days = (s["end"] - s["start"]).total_seconds() / 86_400
    return (
        "Before the flow followed NAV, this strategy traded absolute flow and its LPs ran at "
        "every 5 % drawdown (`dhlp run lp-run-btc-2022 --set flow.notional_per_nav=0 --set "
        "lp.run_drawdown=0.05`): options worth "
        f"{pct(s['notional_written'] / s['initial_nav'] / days, 0)} of the starting NAV a day, "
        "which the stayers carry with less and less capital. NAV per share falls "
        f"{pct(s['max_drawdown'], 0)} (deepest on {s['max_drawdown_trough']:%-d %B}), "
        f"{s['n_withdrawals']} withdrawals leave {usd(s['final_nav'])} in the pool, and the LPs "
        f"who stay to the end have {pct(s['lp_return'], 0)} more per share: leverage, not a "
        "run.\n"
    )


def yield_chasing(runs: Runs) -> str:
    run = runs.get("default", YIELD_CHASING)
    s = run.summary.row(0, named=True)
    deposits = run.lp.filter((pl.col("event") == "deposit") & pl.col("yield_driven"))
    first = deposits["ts"].min().strftime("%-d %B") if deposits.height else "—"
    return (
        "On the default year, a 5 % benchmark and a deposit elasticity of 1 (`dhlp run --set "
        "lp.benchmark_apy=0.05 --set lp.deposit_elasticity=1`) bring "
        f"{deposits.height:,} deposits worth {usd(deposits['amount'].sum())} from {first} on, "
        f"and the pool ends at {usd(s['final_nav'])} with a {pct(s['apy'])} APY.\n"
    )


def data_files(runs: Runs) -> str:
    lines = ["| file | ticks | range (UTC) |", "|---|---:|---|"]
    for name, note in DATA.items():
        ts = pl.read_parquet(ROOT / "data" / name, columns=["ts"])["ts"]
        span = f"{ts.min():%Y-%m-%d} → {ts.max():%Y-%m-%d}{note}"
        lines.append(f"| `{name}` | {ts.len():,} | {span} |")
    return "\n".join(lines) + "\n"


BLOCKS: dict[str, Callable[[Runs], str]] = {
    "default-run": default_run,
    "strategies": strategies,
    "notional": notional,
    "fixed-fee": fixed_fee,
    "fee-elasticity": fee_elasticity,
    "vega": vega,
    "attacks": attacks,
    "attack-figures": attack_figures,
    "lp-run": lp_run,
    "lp-run-absolute": lp_run_absolute,
    "yield-chasing": yield_chasing,
    "data": data_files,
}


# -- charts -------------------------------------------------------------------------------------


def draw_attacks(runs: Runs, out: Path) -> None:
    import matplotlib.pyplot as plt  # only when drawing

    labels = [re.sub(r"[`*]", "", label) for label, _, _ in ATTACKS]
    values = [100 * runs.summary(name, overrides)["apy"] for _, name, overrides in ATTACKS]
    fig, ax = plt.subplots(figsize=(11, 5.6))
    ax.barh(range(len(values)), values, color=["#d62728" if v < 0 else "#1f77b4" for v in values])
    for y, v in enumerate(values):
        side = "left" if v >= 0 else "right"
        ax.text(v + (0.2 if v >= 0 else -0.2), y, f"{v:.1f} %", va="center", ha=side, fontsize=9)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(min(min(values), 0.0) - 3.0, max(values) + 2.0)  # room for the labels
    ax.axvline(0.0, color="black", lw=0.8)
    ax.set_xlabel("LP APY (%)")
    fig.suptitle("What the on-chain pool's enemies cost, and what the defences recover")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(out, dpi=90, metadata={"Software": None})
    plt.close(fig)


def draw_lp_run(runs: Runs, out: Path) -> None:
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True)
    for name, label in LP_RUN.items():
        frame = runs.get(name).steps
        held = frame.with_columns(  # an emptied pool has no NAV per share
            pl.when(pl.col("shares") > 0).then(pl.col("nav_per_share")).alias("nav_per_share")
        )
        top.plot(held["ts"], held["nav_per_share"].to_numpy(), label=label, lw=1.2)
        bottom.plot(frame["ts"], frame["nav"] / 1e6, label=label, lw=1.2)
    top.axhline(1.0, color="grey", lw=0.8, ls="--")
    top.set_ylabel("NAV per share (USD)")
    top.set_title("BTC pool through May-Dec 2022: LPs who stay and LPs who run")
    bottom.set_ylabel("NAV (M USD)")
    bottom.set_xlabel("date (UTC)")
    bottom.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m"))
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(out, dpi=90, metadata={"Software": None})
    plt.close(fig)


CHARTS: dict[str, Callable[[Runs, Path], None]] = {
    "attacks.png": draw_attacks,
    "lp-run.png": draw_lp_run,
}


# -- README -------------------------------------------------------------------------------------


def wrap(body: str) -> str:
    """Prose lines wrapped at the README's 100 columns; table rows left whole."""
    return "".join(
        line + "\n"
        if line.startswith("|")
        else textwrap.fill(line, 100, break_long_words=False, break_on_hyphens=False) + "\n"
        for line in body.splitlines()
    )


def render(runs: Runs) -> dict[str, str]:
    runs.prefetch(every_run())
    return {name: wrap(block(runs)) for name, block in BLOCKS.items()}


def marked(name: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- readme:{name} -->\n)(.*?)(<!-- /readme:{name} -->)", re.S)


def read_block(text: str, name: str) -> str:
    found = marked(name).search(text)
    if found is None:
        raise SystemExit(f"README.md: no <!-- readme:{name} --> … <!-- /readme:{name} --> block")
    return found.group(2)


def splice(text: str, blocks: dict[str, str]) -> str:
    for name, body in blocks.items():
        read_block(text, name)  # every block must have its markers
        text = marked(name).sub(lambda m, b=body: m.group(1) + b + m.group(3), text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", action="store_true", help="rewrite README.md and the charts")
    action.add_argument("--check", action="store_true", help="exit 1 if README.md differs")
    parser.add_argument("--reports", type=Path, default=ROOT / "reports", help="run folders root")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (spawned processes)")
    args = parser.parse_args()
    blocks = render(Runs(args.reports, args.jobs))
    if not (args.check or args.write):
        for name, body in blocks.items():
            print(f"<!-- readme:{name} -->\n{body}<!-- /readme:{name} -->\n")
        return
    text = README.read_text()
    new = splice(text, blocks)
    if args.check:
        diff = difflib.unified_diff(
            text.splitlines(True), new.splitlines(True), "README.md", "generated"
        )
        sys.stdout.writelines(diff)
        sys.exit(1 if new != text else 0)
    README.write_text(new)
    for name, draw in CHARTS.items():
        draw(Runs(args.reports, args.jobs), ROOT / "docs" / name)


if __name__ == "__main__":
    main()
