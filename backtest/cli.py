"""`dhlp`: a thin typer shell over the Python API. Bad input is one line on stderr, exit code 2."""

from __future__ import annotations

import gc
import json
import math
import sys
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from typer.core import TyperCommand

from backtest.errors import InputError
from backtest.fmt import pct

app = typer.Typer(
    help="Backtests of dynamically hedged options liquidity pools.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Check, import and generate input data.", no_args_is_help=True)
app.add_typer(data_app, name="data")

# Logs (CI, pipes) get wide tables instead of truncated cells.
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)

# What a cold compile of the kernel (backtest.kernel.cached() is False) takes on 2 cores.
COMPILING = "compiling the kernel once, about 75 s on 2 cores"
SET_KEYS = "every key is in docs/strategy.toml and docs/design.md"


@contextmanager
def user_errors() -> Iterator[None]:
    """Bad input ends the command with one clear line and exit code 2, never a traceback."""
    try:
        yield
    except InputError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


class SimulateCommand(TyperCommand):
    """`data simulate`, whose epilog (every model's parameters) is built when its help is shown:
    it comes from the simulators' own parameter models, and importing those (numpy, polars,
    pyarrow, pydantic) would add about 0.2 s to every other command and to `dhlp --help`."""

    def format_help(self, ctx: typer.Context, formatter: Any) -> None:
        from backtest.inputs.simulate import help_text

        self.epilog = "\b\n" + help_text()  # "\b": click keeps the model list as written
        super().format_help(ctx, formatter)


class Progressing:
    """Progress of counted work on stderr. In a terminal, a transient bar with the count, time
    spent and time left; in logs (CI, pipes), where that bar shows nothing, a plain line each
    tenth of the work, so a long run is seen to move."""

    def __init__(self, description: str, unit: str) -> None:
        self.description, self.unit = description, unit
        self.bar = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=True,
            disable=not err.is_terminal,
        )
        self.task = self.bar.add_task(description, total=None)
        self.started = time.monotonic()
        self.tenths = 0  # of the work, reported in plain lines so far

    def __enter__(self) -> Progressing:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def note(self, text: str) -> None:
        """Something to know while it lasts: beside the bar's description, or a line of its own."""
        if self.bar.disable:
            err.print(text, markup=False, highlight=False)
        else:
            self.bar.update(self.task, description=f"{self.description} ({text})")

    def update(self, done: int, total: int, description: str | None = None) -> None:
        description = description or self.description  # a note lasts until the next update
        self.bar.update(self.task, completed=done, total=total, description=description)
        if self.bar.disable and total > 1 and 10 * done // total > self.tenths:
            self.tenths = 10 * done // total
            spent = time.monotonic() - self.started
            eta = math.ceil((total - done) * spent / done)
            left = f", about {eta} s left" if done < total else ""
            err.print(
                f"{self.description}: {done:,}/{total:,} {self.unit}, {spent:.0f} s{left}",
                markup=False,
                highlight=False,
            )


def parse_set(items: list[str]) -> dict[str, Any]:
    """`section.key=value` pairs; the value is read as a TOML value, else as a plain string."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--set {item}: expected section.key=value")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        overrides[key.strip()] = value
    return overrides


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """`section.key=v1,v2,...`: one TOML array if the values form one, else split at commas,
    each value read as in --set."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputError(f"--set {item}: expected section.key=value1,value2,...")
        if key in grid:
            raise InputError(f"--set {key}: given twice; list its values once: {key}=v1,v2")
        try:
            grid[key] = tomllib.loads(f"v = [{raw}]")["v"]
        except tomllib.TOMLDecodeError:
            grid[key] = [parse_set([f"{key}={v}"])[key] for v in raw.split(",")]
    return grid


def summary_table(summary: dict[str, Any]) -> Table:
    table = Table(title=f"run {summary['run_id']}", show_header=False, title_justify="left")
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")

    def money(x: float) -> str:
        return f"{x:,.0f}"

    rows = [
        ("period", f"{summary['start']:%Y-%m-%d %H:%M} → {summary['end']:%Y-%m-%d %H:%M} UTC"),
        ("ticks", f"{summary['n_ticks']:,}"),
        ("NAV", f"{money(summary['initial_nav'])} → {money(summary['final_nav'])}"),
        ("LP return / APY", f"{pct(summary['lp_return'])} / {pct(summary['apy'])}"),
        ("Sharpe (daily)", "n/a" if summary["sharpe"] is None else f"{summary['sharpe']:.2f}"),
        ("max drawdown", pct(summary["max_drawdown"])),
        (
            "trades filled / partial / rejected",
            f"{summary['n_trades']:,} / {summary['n_partial']:,} / {summary['n_rejected']:,}",
        ),
        ("hedges / notional", f"{summary['n_hedges']:,} / {money(summary['hedge_notional'])}"),
        ("hedge cost / fees", pct(summary["hedge_cost_over_fees"])),
        ("max utilisation", pct(summary["max_utilisation"])),
        ("liquidation closes", f"{summary['n_liquidations']:,}"),
        (
            "LP exits: paid / their unwind cost",
            f"{money(summary['lp_withdrawals'])} / {money(summary['lp_unwind_cost'])}",
        ),
        ("insolvent", "no" if not summary["insolvent"] else f"yes, {summary['insolvency_ts']}"),
    ]
    if summary.get("max_lent", 0.0) > 0.0:  # lent collateral: only when the pool lent
        locked = summary["n_rejected_collateral_locked"] + summary["n_partial_collateral_locked"]
        rows.append(
            (
                "lending yield / cut collateral_locked / blocked ticks / waits",
                f"{money(summary['lending_yield'])} / {locked:,} / "
                f"{summary['n_recall_blocked']:,} / {summary['n_withdrawals_waited']:,}",
            )
        )
    for key in (
        "pnl_fees",
        "pnl_impact",
        "pnl_theta",
        "pnl_gamma",
        "pnl_vega",
        "pnl_delta",
        "pnl_vanna",
        "pnl_volga",
        "pnl_residual",
        "pnl_hedge_cost",
        "pnl_funding",
        "pnl_interest",
        "pnl_liquidation",
        "pnl_total",
    ):
        rows.append((key, money(summary[key])))
    for name, value in rows:
        table.add_row(name, value)
    return table


def cell(value: Any) -> str:
    """A sweep or query table cell: floats to a few significant digits, never "-0"."""
    if value is None:
        return ""
    return f"{value + 0.0:,.6g}" if isinstance(value, float) else str(value)


# Across-path metrics (results.summary.distribution) of a multi-path run and of each multi-path
# sweep point: (key, label in the run's table, header in the sweep table).
DISTRIBUTION = (
    ("lp_return_mean", "LP return, mean", "mean"),
    ("lp_return_q50", "LP return, median", "median"),
    ("var_95", "VaR 95 % (loss, positive = loss)", "VaR95"),
    ("es_95", "ES 95 % (mean loss of the worst 5 % of paths, positive = loss)", "ES95"),
    ("p_insolvent", "P(insolvent)", "P(insolv)"),
    ("mean_max_drawdown", "max drawdown, mean over paths", "mean DD"),
)
DISTRIBUTION_CAPTION = (
    "mean, median: LP return on NAV per share; VaR95, ES95: loss at 95 % (positive = loss); "
    "P(insolv): share of paths insolvent; mean DD: mean max drawdown"
)
# A single-path sweep point's summary row: (key, header, format).
SINGLE_PATH = (
    ("lp_return", "return", pct),
    ("apy", "APY", pct),
    ("sharpe", "Sharpe", cell),
    ("max_drawdown", "max DD", pct),
    ("hedge_cost_over_fees", "hedge/fees", pct),
    ("insolvent", "insolvent", cell),
)
SINGLE_PATH_CAPTION = "return: LP return on NAV per share; hedge/fees: hedge cost over fee income"


def distribution_table(summary: Any, run_id: str) -> Table:
    """The across-path distribution a risk reader wants first, in place of one path's table."""
    from backtest.results.summary import distribution

    dist = distribution(summary)
    n_paths, n_insolvent = dist["n_paths"], int(summary["insolvent"].sum())
    table = Table(title=f"run {run_id}: {n_paths:,} paths", show_header=False, title_justify="left")
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    for key, label, _ in DISTRIBUTION:
        table.add_row(label, pct(dist[key]))
    table.add_row("insolvent paths", f"{n_insolvent:,} of {n_paths:,}")
    return table


@app.command()
def run(
    strategy: Annotated[
        Path | None,
        typer.Argument(
            help="Strategy TOML file, or the name of a bundled strategy such as unhedged "
            "(`dhlp strategies` lists them); default: the bundled default strategy"
        ),
    ] = None,
    market: Annotated[
        Path | None,
        typer.Option(
            help="Market Parquet file or folder (whole file: the strategy window is dropped); "
            "with a path_id column every path runs and the distribution is printed"
        ),
    ] = None,
    flow: Annotated[str | None, typer.Option(help="Flow Parquet, or 'synthetic'")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Runs folder")] = Path("reports/runs"),
    run_id: Annotated[str | None, typer.Option(help="Name the run folder")] = None,
    seed: Annotated[int | None, typer.Option(help="Synthetic flow seed")] = None,
    force: Annotated[bool, typer.Option(help="Rerun even if this run exists")] = False,
    no_report: Annotated[bool, typer.Option("--no-report", help="Skip plots and HTML")] = False,
    summary_only: Annotated[
        bool, typer.Option("--summary-only", help="Write only per-path summaries (many paths)")
    ] = False,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help=f"Override a strategy key, e.g. hedge.threshold=0.05; repeatable ({SET_KEYS})",
        ),
    ] = None,
) -> None:
    """Run one strategy, a file or a bundled name (`dhlp run unhedged`), and write its run
    folder."""
    from backtest import runner
    from backtest.kernel import cached

    with user_errors():
        overrides = {k.replace(".", "__"): v for k, v in parse_set(set_ or []).items()}
        with Progressing("running", "paths") as progress:

            def on_batch(done: int, total: int) -> None:
                progress.update(done, total)
                if done == 0 and not cached():
                    progress.note(COMPILING)

            result = runner.run(
                strategy,
                market=market,
                flow=flow,
                out=out_dir,
                run_id=run_id,
                seed=seed,
                force=force,
                report=not no_report,
                keep="summary" if summary_only else "all",
                on_batch=on_batch,
                **overrides,
            )
    rows = result.summary.to_dicts()
    if result.reused:
        out.print(f"identical run exists, not rerun (use --force): {result.path}")
    if len(rows) == 1:
        out.print(summary_table(rows[0]))
    else:
        out.print(distribution_table(result.summary, result.run_id))
    out.print(f"run folder: {result.path}")


METRICS_HELP = (
    "Heatmap metric, a numeric column of the sweep table. Multi-path points (--paths): "
    "lp_return_mean (default), lp_return_std, lp_return_q05, lp_return_q25, lp_return_q50, "
    "lp_return_q75, lp_return_q95, var_95, es_95, var_99, es_99, p_insolvent, mean_max_drawdown, "
    "mean_bad_debt, mean_apy, mean_final_nav. Single-path points: any numeric summary column "
    "(docs/design.md), e.g. lp_return (default), apy, sharpe, max_drawdown, hedge_cost_over_fees"
)


def sweep_table(result: Any, metric: str | None, console: Console) -> Table:
    """Swept values (headed by their last part where that is unambiguous), the metrics worth
    comparing across points, and run_id. Where that is wider than `console`, run_id and then the
    last metrics are left out (the caption says which) rather than wrapping every cell."""
    frame = result.frame
    if "var_95" in frame.columns:
        shown = [(key, header, pct) for key, _, header in DISTRIBUTION]
        caption = DISTRIBUTION_CAPTION
    else:
        shown, caption = list(SINGLE_PATH), SINGLE_PATH_CAPTION
    if metric and metric not in [key for key, *_ in shown]:
        shown.append((metric, metric, cell))
    ends = [key.rsplit(".", 1)[-1] for key in result.grid]
    swept = [
        (key, end if ends.count(end) == 1 else key, cell)
        for key, end in zip(result.grid, ends, strict=True)
    ]
    columns = [c for c in [*swept, *shown, ("run_id", "run_id", cell)] if c[0] in frame.columns]
    droppable = ["run_id", *[key for key, *_ in reversed(shown[1:]) if key != metric]]
    for cut in range(len(droppable) + 1):
        left_out = droppable[:cut]
        table = Table(
            title=f"sweep {result.sweep_id}",
            title_justify="left",
            caption=caption
            + (f"; too wide to show: {', '.join(left_out)} (see summary.parquet)" if cut else ""),
            caption_justify="left",
        )
        kept = [column for column in columns if column[0] not in left_out]
        for key, header, _ in kept:
            table.add_column(header, justify="right" if frame.schema[key].is_numeric() else "left")
        for row in frame.select(key for key, *_ in kept).iter_rows():
            table.add_row(*[fmt(v) for (_, _, fmt), v in zip(kept, row, strict=True)])
        natural = console.measure(table, options=console.options.update(max_width=10_000))
        if natural.maximum <= console.width:
            break
    return table


@app.command()
def sweep(
    strategy: Annotated[
        Path, typer.Argument(help="Strategy TOML file, or the name of a bundled strategy")
    ],
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Grid axis, e.g. hedge.threshold=0.01,0.05; repeatable, every combination "
            f"runs ({SET_KEYS})",
        ),
    ] = None,
    paths: Annotated[
        Path | None, typer.Option(help="Multi-path market file for every point")
    ] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Runs folder")] = Path("reports/runs"),
    executor: Annotated[str, typer.Option(help="local or dask")] = "local",
    scheduler: Annotated[str | None, typer.Option(help="Dask scheduler address")] = None,
    jobs: Annotated[int, typer.Option(help="Points run at once")] = 2,
    keep: Annotated[str, typer.Option(help="all, or summary (skip per-tick tables)")] = "all",
    metric: Annotated[str | None, typer.Option(help=METRICS_HELP)] = None,
    x: Annotated[str | None, typer.Option(help="Heatmap x key")] = None,
    y: Annotated[str | None, typer.Option(help="Heatmap y key")] = None,
) -> None:
    """Run every combination of the --set values; each point is a normal run folder. Rerunning
    the same command skips finished points."""
    from backtest import sweep as sw
    from backtest.kernel import cached

    with user_errors():
        grid = parse_grid(set_ or [])
        with Progressing("sweep", "points") as progress:

            def on_start(total: int) -> None:
                progress.update(0, total)
                if not cached():
                    progress.note(COMPILING)

            def on_point(point: Any, done: int, total: int) -> None:
                note = " (reused)" if point.reused else ""
                progress.update(done, total, description=point.run_id + note)

            result = sw.sweep(
                strategy,
                grid,
                paths=paths,
                out=out_dir,
                executor=executor,
                scheduler=scheduler,
                jobs=jobs,
                keep=keep,
                on_point=on_point,
                on_start=on_start,
            )
            png = sw.heatmap(result, metric, x, y) if grid else None
    out.print(sweep_table(result, metric, out))
    out.print(
        f"{len(result.points)} points: {len(result.points) - result.n_reused} run, "
        f"{result.n_reused} reused"
    )
    out.print(f"sweep folder: {result.path}")
    if png is not None:
        out.print(f"heatmap: {png}")


@app.command()
def regress(
    update: Annotated[bool, typer.Option("--update", help="Rewrite the baselines")] = False,
    only: Annotated[list[str] | None, typer.Option("--only", help="Strategy name")] = None,
    rtol: Annotated[float, typer.Option(help="Relative tolerance on float metrics")] = 1e-9,
    jobs: Annotated[int, typer.Option(help="Worker processes")] = 2,
    table: Annotated[bool, typer.Option("--table", help="Print the strategy table")] = False,
    strategies: Annotated[
        Path | None, typer.Option(help="Strategies folder (default: the bundled library)")
    ] = None,
) -> None:
    """Re-run every strategy and compare with its baseline; exit 1 on a difference."""
    from backtest import regress as rg

    with user_errors():
        baselines = strategies / "baselines" if strategies else None
        if table:
            print(rg.strategy_table(baselines), end="")
            return
        drift = rg.version_drift(baselines)
        if drift and not update:
            out.print(
                "note: installed versions differ from the baselines' "
                f"({rg.CONSTRAINTS} beside them): {', '.join(drift)}; money may move in the "
                "last digits"
            )
        result = rg.regress(strategies, only=only, update=update, rtol=rtol, jobs=jobs)
    if any(row.status != rg.OK for row in result.rows):
        out.print(rg.diff_table(result))
    else:
        out.print(f"regress: {len({row.strategy for row in result.rows})} strategies, all ok")
    if not result.ok:
        raise typer.Exit(1)


@app.command()
def strategies() -> None:
    """List the bundled strategies and the question each asks."""
    from backtest import bundled

    table = Table(title="bundled strategies: dhlp run NAME", title_justify="left")
    table.add_column("strategy", style="bold")
    table.add_column("question")
    for path in sorted(bundled.strategies().glob("*.toml")):
        table.add_row(path.stem, bundled.question(path))
    out.print(table)


@app.command()
def report(
    run_folder: Annotated[Path, typer.Argument(help="A run folder, or a run_id under --runs")],
    runs: Annotated[Path, typer.Option(help="Runs folder")] = Path("reports/runs"),
) -> None:
    """(Re)build plots and report.html for a run."""
    from backtest.results.report import build_report

    with user_errors():
        folder = run_folder if run_folder.is_dir() else runs / str(run_folder)
        if not (folder / "summary.parquet").is_file():
            raise InputError(f"{run_folder}: not a run folder (no summary.parquet)")
        path = build_report(folder)
    out.print(f"report: {path}")


@app.command()
def sql(
    query_text: Annotated[str, typer.Argument(metavar="QUERY", help="SQL over runs, steps, ...")],
    runs: Annotated[Path, typer.Option("--reports", help="Runs folder")] = Path("reports/runs"),
    fmt: Annotated[str, typer.Option("--format", help="table, csv or json")] = "table",
    export: Annotated[
        Path | None, typer.Option(help="Also write a .duckdb file with the views as tables")
    ] = None,
) -> None:
    """DuckDB over every run folder under --reports, one view per table: runs (summaries),
    steps, trades, hedges, series, liquidations, lp (columns: docs/design.md)."""
    from backtest.results import catalog

    with user_errors():
        if fmt not in ("table", "csv", "json"):
            raise InputError(f"--format: expected table, csv or json, got {fmt!r}")
        result = catalog.query(query_text, runs)
        if export is not None:
            catalog.export(export, runs)
    if fmt == "csv":
        print(result.write_csv(), end="")
    elif fmt == "json":
        print(result.write_json())
    else:
        table = Table(show_lines=False)
        for name in result.columns:
            table.add_column(name, justify="right" if result[name].dtype.is_numeric() else "left")
        for row in result.iter_rows():
            table.add_row(*[cell(v) for v in row])
        out.print(table)
        out.print(f"{result.height:,} rows")


@data_app.command("validate")
def data_validate(
    files: Annotated[
        list[Path], typer.Argument(help="Market, flow, LP-flow or utilisation Parquet files")
    ],
) -> None:
    """Check files against the market, flow, LP-flow or utilisation schema (chosen by their
    columns)."""
    from backtest.inputs.checks import read_parquet
    from backtest.inputs.flow import load_flow
    from backtest.inputs.lending import load_utilisation
    from backtest.inputs.lp import load_lp_flows
    from backtest.inputs.market import load_market

    with user_errors():
        for path in files:
            columns = read_parquet(path).columns if path.is_file() else []
            if "expiry" in columns:
                rows = load_flow(path).height
                out.print(f"ok  {path}: flow, {rows:,} rows")
            elif "utilisation" in columns:
                rows = load_utilisation(path).height
                out.print(f"ok  {path}: money-market utilisation, {rows:,} rows")
            elif "amount" in columns:
                rows = load_lp_flows(path).height
                out.print(f"ok  {path}: LP flows, {rows:,} rows")
            else:
                market = load_market(path)
                ts = market.frame()["ts"]
                first, last = ts[0], ts[-1]
                out.print(
                    f"ok  {path}: market, {len(market.ts):,} ticks, {market.n_paths} path(s), "
                    f"{first:%Y-%m-%d %H:%M} → {last:%Y-%m-%d %H:%M} UTC"
                )


DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
BLOCK_HOURS = 4  # the stats grid's columns: hours of the day, UTC, four at a time


@data_app.command("stats")
def data_stats(
    path: Annotated[Path, typer.Argument(help="Market Parquet file or folder (ts, spot, iv)")],
    start: Annotated[str | None, typer.Option(help="First tick (ISO date/time, UTC)")] = None,
    end: Annotated[str | None, typer.Option(help="Ticks before this (ISO date/time, UTC)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables")] = False,
) -> None:
    """Realised variance by hour of the week: the weekend ratio (a weekend hour's variance over a
    weekday hour's) a variance clock's weekend_weight can be set from. Weekend: Saturday 00:00 to
    Monday 00:00 UTC; each return counts in the hour its interval starts."""
    from backtest.config import parse_end, parse_time
    from backtest.inputs.market import load_market
    from backtest.inputs.stats import variance_by_hour

    with user_errors():
        try:
            first = parse_time(start) if start else None
            last = parse_end(end) if end else None
        except ValueError as exc:
            raise InputError(f"--start/--end: {exc}") from None
        stats = variance_by_hour(load_market(path, first, last))
    if as_json:
        by_hour = stats.by_hour.select("hour_of_week", "returns", "vol").to_dicts()
        summary = {
            "returns": stats.n_returns,
            "weekday_vol": math.sqrt(stats.weekday_variance),
            "weekend_vol": math.sqrt(stats.weekend_variance),
            "mean_iv": stats.mean_iv,
            "weekend_ratio": stats.weekend_ratio,
            "by_hour_of_week": by_hour,
        }
        print(json.dumps(summary, indent=2))
        return
    out.print(
        f"{path}: {stats.n_returns:,} returns; realised vol weekdays "
        f"{pct(math.sqrt(stats.weekday_variance), 1)}, weekends "
        f"{pct(math.sqrt(stats.weekend_variance), 1)} (mean implied {pct(stats.mean_iv, 1)}); "
        f"weekend ratio {stats.weekend_ratio:.2f} (a weekend hour's variance / a weekday hour's)"
    )
    table = Table(title="realised vol, annualised, by day and hour (UTC)")
    table.add_column("day")
    for h in range(0, 24, BLOCK_HOURS):
        table.add_column(f"{h:02d}-{h + BLOCK_HOURS:02d}", justify="right")
    for name, row in zip(DAYS, stats.vol_grid(BLOCK_HOURS), strict=True):
        table.add_row(name, *[pct(v, 0) if v == v else "" for v in row])
    out.print(table)


@data_app.command("import")
def data_import(
    source: Annotated[Path, typer.Argument(help="Exchange export (Parquet or CSV)")],
    output: Annotated[Path, typer.Option("--out", help="Flow Parquet to write")],
    fmt: Annotated[str, typer.Option("--format", help="Export format")] = "deribit",
) -> None:
    """Turn an exchange's option-trade export into a flow file."""
    from backtest.inputs.deribit import import_deribit_trades

    with user_errors():
        if fmt != "deribit":
            raise InputError(f"--format: unknown format {fmt!r} (known: deribit)")
        flow = import_deribit_trades(source)
        output.parent.mkdir(parents=True, exist_ok=True)
        flow.write_parquet(output)
    out.print(f"wrote {flow.height:,} flow rows to {output}")


@data_app.command("synth-flow")
def data_synth_flow(
    output: Annotated[Path, typer.Option("--out", help="Flow Parquet to write")],
    strategy: Annotated[Path | None, typer.Option(help="Strategy whose [flow] to use")] = None,
    market: Annotated[
        Path | None, typer.Option(help="Market file (default: the strategy's)")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Generator seed")] = None,
) -> None:
    """Write the seeded synthetic flow a strategy would trade against."""
    from backtest import runner
    from backtest.inputs.flow import public_flow
    from backtest.plan import synthetic_flow

    with user_errors():
        prep = runner.prepare(strategy, market=market, seed=seed)
        flow = public_flow(synthetic_flow(prep.strategy, prep.market))
        output.parent.mkdir(parents=True, exist_ok=True)
        flow.write_parquet(output)
    out.print(f"wrote {flow.height:,} flow rows to {output}")


@data_app.command("simulate", cls=SimulateCommand)
def data_simulate(
    model: Annotated[str, typer.Argument(help="gbm, merton, heston or bootstrap")],
    output: Annotated[Path, typer.Option("--out", help="Market Parquet to write")],
    paths: Annotated[int, typer.Option(help="Number of paths")] = 1000,
    ticks: Annotated[int, typer.Option(help="Ticks per path, the first included")] = 720,
    step: Annotated[
        str | None, typer.Option(help="Tick spacing: 30m, 1h, 1d (bootstrap: the history's)")
    ] = None,
    start: Annotated[str, typer.Option(help="First tick, ISO date/time (UTC)")] = "2024-01-01",
    seed: Annotated[int, typer.Option(help="Random seed")] = 0,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Model parameter: xi=0.8 (repeatable)")
    ] = None,
) -> None:
    """Simulate seeded spot and implied-vol paths: a market file for `dhlp run --market`.

    Same seed, same paths; path k and its first ticks stay the same when --paths or --ticks
    grow. `dhlp data simulate --help` lists every model's parameters below.
    """
    from backtest.inputs.simulate import simulate, write_paths

    with user_errors():
        params = {k.split(".")[-1]: v for k, v in parse_set(set_ or []).items()}
        frame = simulate(model, paths, ticks, step, start, seed, **params)
        settings = {
            "model": model,
            "paths": paths,
            "ticks": ticks,
            "step": step,
            "start": start,
            "seed": seed,
            "params": params,
        }
        write_paths(frame, output, settings)
    out.print(f"wrote {paths:,} paths x {ticks:,} ticks ({model}) to {output}")


@app.command()
def bench(
    ticks: Annotated[int, typer.Option(help="1-minute ticks to simulate")] = 525_600,
    trades: Annotated[int, typer.Option(help="Trades over those ticks")] = 100_000,
    compile_time: Annotated[
        bool, typer.Option("--compile/--no-compile", help="Also time a cold compile (~30 s)")
    ] = True,
    start_up: Annotated[
        bool, typer.Option("--start-up/--no-start-up", help="Also time start-up (fresh processes)")
    ] = True,
) -> None:
    """Measure this machine (JSON): the kernel against a bare Black-Scholes loop on the same
    series-ticks, a whole run, start-up and the cold compile. A year of minutes by default."""
    from backtest.bench import measure

    with user_errors():
        if ticks < 10_080 or trades < 1:
            raise InputError("--ticks must be >= 10080 (a week: the board lists weeklies)")
        print(json.dumps(measure(ticks, trades, compile_time, start_up), indent=2))


def main() -> None:
    try:
        app()
    finally:
        # The process ends next. Frozen, the objects a run leaves (about 150,000, most of them
        # numba's) are skipped by the collector's passes at interpreter exit: 0.2 s of every run.
        gc.freeze()
