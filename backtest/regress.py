"""`dhlp regress`: re-run every named strategy and compare what it earned with a stored baseline.

CI's guard against unintended change to strategy PnL. A baseline also records the input-data
hashes and the engine version, so a changed data file is named as such instead of passing for a
PnL change, and an engine change that moves nothing does not fail.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import polars as pl
from rich.table import Table

from backtest import bundled, runner
from backtest.errors import InputError
from backtest.fmt import pct
from backtest.kernel.types import PNL_COMPONENTS

# How a metric is compared: "exact" for counts, flags and timestamps; otherwise it passes when
# |current - baseline| <= rtol x max(|baseline|, floor). The floor for money is the pool's
# initial capital, so a component that is near zero (funding, residual) is not flagged for
# rounding noise; for fractions and units it is 1.
MONEY, UNIT, EXACT = "money", "unit", "exact"
METRICS: dict[str, str] = {
    "final_nav": MONEY,
    **{name: MONEY for name in PNL_COMPONENTS},
    "pnl_total": MONEY,
    "lp_flow": MONEY,
    "lp_return": UNIT,
    "apy": UNIT,
    "sharpe": UNIT,
    "max_drawdown": UNIT,
    "n_trades": EXACT,
    "n_partial": EXACT,
    "n_rejected": EXACT,
    "volume": UNIT,
    "n_hedges": EXACT,
    "hedge_volume": UNIT,
    "hedge_notional": MONEY,
    "hedge_cost_over_fees": UNIT,
    "max_utilisation": UNIT,
    "insolvent": EXACT,
    "insolvency_ts": EXACT,
    "bad_debt": MONEY,
}

OK = "ok"
CHANGED = "changed"  # a metric moved beyond tolerance
MISSING = "missing"  # no baseline (or a baseline without this metric / path)
DATA_CHANGED = "data_changed"  # input data or seed differ: metrics are not comparable
ERROR = "error"  # the strategy did not run (bad file or data)
ENGINE_CHANGED = "engine_changed"  # information only
CONFIG_CHANGED = "config_changed"  # information only: explains an expected PnL change
ORPHANED = "orphaned"  # information only: a baseline whose strategy file is gone
UPDATED = "updated"  # update=True rewrote a baseline that differed
REMOVED = "removed"  # update=True deleted an orphaned baseline
FAILING = frozenset({CHANGED, MISSING, DATA_CHANGED, ERROR})


@dataclass(frozen=True)
class Row:
    strategy: str
    metric: str
    baseline: Any
    current: Any
    rel_diff: float | None
    status: str


@dataclass
class RegressResult:
    rows: list[Row]

    @property
    def ok(self) -> bool:
        return not any(row.status in FAILING for row in self.rows)

    @property
    def failures(self) -> list[Row]:
        return [row for row in self.rows if row.status in FAILING]


def _json_value(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalar
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value)}")


def _dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, default=_json_value) + "\n"


def input_facts(facts: dict[str, Any]) -> dict[str, Any]:
    """What the run read: a hash per data file (None when unused) and the flow seed."""
    return {k: v for k, v in facts.items() if k.endswith("_sha256") or k == "seed"}


def measure(path: Path) -> dict[str, Any]:
    """Run one strategy in memory (no run folder) and return its would-be baseline document.

    Module level so a spawned worker process can import it.
    """
    try:
        plan = runner.prepare(path)
        summaries = [summary for summary, _ in runner.run_batches(plan)]
    except InputError as exc:
        return {"strategy": path.stem, "error": str(exc)}
    summary = pl.concat(summaries, how="diagonal_relaxed").drop("run_id", strict=False)
    facts = plan.resolved["run"]
    config = json.dumps(plan.resolved["strategy"], sort_keys=True).encode()
    doc = {
        "strategy": path.stem,
        "description": plan.strategy.description,
        "market": plan.strategy.data.market,
        "engine_version": facts["engine_version"],
        "inputs": input_facts(facts),
        "config_sha256": hashlib.sha256(config).hexdigest(),
        "paths": summary.to_dicts(),
    }
    # Through JSON, so a fresh run compares exactly like the file it would be written as.
    return json.loads(_dumps(doc))


def _same(a: Any, b: Any) -> bool:
    both_nan = isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
    return a == b or both_nan


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def compare_metric(
    strategy: str, label: str, kind: str, base: Any, cur: Any, floor: float, rtol: float
) -> Row:
    """rel_diff is |current - baseline| / |baseline|, as a reader expects; the pass test uses
    max(|baseline|, floor) instead, so rounding noise on a near-zero component does not fail."""
    if _same(base, cur):
        return Row(strategy, label, base, cur, 0.0 if _number(base) else None, OK)
    if not (_number(base) and _number(cur)):
        return Row(strategy, label, base, cur, None, CHANGED)
    diff = abs(cur - base)
    rel = diff / abs(base) if base else math.inf
    scale = max(abs(base), floor if kind == MONEY else 1.0)
    within = kind != EXACT and diff <= rtol * scale
    return Row(strategy, label, base, cur, rel, OK if within else CHANGED)


def compare(name: str, base: dict | None, cur: dict, rtol: float) -> list[Row]:
    """Rows for one strategy: why it cannot be compared, or one row per metric and path."""
    if "error" in cur:
        return [Row(name, "run", None, cur["error"], None, ERROR)]
    if base is None:
        return [Row(name, "baseline", None, "no baseline file", None, MISSING)]
    rows = []
    if base.get("engine_version") != cur["engine_version"]:
        old, new = base.get("engine_version"), cur["engine_version"]
        rows.append(Row(name, "engine_version", old, new, None, ENGINE_CHANGED))
    if base.get("config_sha256") != cur["config_sha256"]:
        old, new = base.get("config_sha256"), cur["config_sha256"]
        rows.append(Row(name, "config_sha256", old, new, None, CONFIG_CHANGED))
    old_inputs, new_inputs = base.get("inputs", {}), cur["inputs"]
    data_rows = [
        Row(name, key, old_inputs.get(key), new_inputs.get(key), None, DATA_CHANGED)
        for key in sorted(old_inputs.keys() | new_inputs.keys())
        if old_inputs.get(key) != new_inputs.get(key)
    ]
    if data_rows:
        return rows + data_rows
    old_paths = {p["path_id"]: p for p in base.get("paths", [])}
    multi = len(cur["paths"]) > 1
    for path in cur["paths"]:
        pid = path["path_id"]
        old = old_paths.get(pid)
        suffix = f"[path {pid}]" if multi else ""
        if old is None:
            rows.append(Row(name, f"path{suffix}", None, pid, None, MISSING))
            continue
        for metric, kind in METRICS.items():
            label, value = metric + suffix, path.get(metric)
            if metric not in old:
                rows.append(Row(name, label, None, value, None, MISSING))
            else:
                floor = path["initial_nav"]
                rows.append(compare_metric(name, label, kind, old[metric], value, floor, rtol))
    return rows


def _strategy_files(strategies_dir: Path, only: list[str] | None) -> list[Path]:
    if not strategies_dir.is_dir():
        raise InputError(f"{strategies_dir}: strategies folder not found")
    files = sorted(strategies_dir.glob("*.toml"))
    if only is not None:
        known = {f.stem for f in files}
        unknown = [name for name in only if name not in known]
        if unknown:
            raise InputError(f"{strategies_dir}: no strategy named {unknown[0]!r}")
        files = [f for f in files if f.stem in only]
    if not files:
        raise InputError(f"{strategies_dir}: no strategy files (*.toml)")
    return files


def _run_all(files: list[Path], jobs: int) -> list[dict[str, Any]]:
    """Serial in this process for jobs=1; otherwise a spawned pool (numba's and polars' threads
    do not survive a fork), so a calling script needs the `if __name__ == "__main__":` guard."""
    if jobs == 1 or len(files) == 1:
        return [measure(f) for f in files]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(jobs, len(files)), mp_context=context) as pool:
        return list(pool.map(measure, files))


def _metric_rows_to_updated(rows: list[Row]) -> list[Row]:
    return [
        Row(r.strategy, r.metric, r.baseline, r.current, r.rel_diff, UPDATED)
        if r.status in (CHANGED, MISSING, DATA_CHANGED)
        else r
        for r in rows
    ]


def regress(
    strategies_dir: Path | None = None,
    baselines_dir: Path | None = None,
    only: list[str] | None = None,
    update: bool = False,
    rtol: float = 1e-9,
    jobs: int = 2,
) -> RegressResult:
    """Re-run strategies and compare with (or, with `update`, rewrite) their baselines.

    `strategies_dir` defaults to the bundled library, `baselines_dir` to
    `<strategies_dir>/baselines`; `only` names strategies by file stem. A full update (no
    `only`) also deletes baselines whose strategy file is gone, and records the installed
    package versions in `<baselines_dir>/constraints.txt`.
    """
    if not rtol >= 0:
        raise InputError(f"rtol: must be >= 0 (got {rtol})")
    if jobs < 1:
        raise InputError(f"jobs: must be >= 1 (got {jobs})")
    strategies_dir = Path(strategies_dir) if strategies_dir else bundled.strategies()
    baselines_dir = Path(baselines_dir) if baselines_dir else strategies_dir / "baselines"
    files = _strategy_files(strategies_dir, only)
    rows: list[Row] = []
    for doc in _run_all(files, jobs):
        name = doc["strategy"]
        target = baselines_dir / f"{name}.json"
        base = json.loads(target.read_text()) if target.exists() else None
        found = compare(name, base, doc, rtol)
        if update and "error" not in doc:
            baselines_dir.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(".json.tmp")
            tmp.write_text(_dumps(doc))
            tmp.replace(target)
            found = _metric_rows_to_updated(found)
        rows += found
    if only is None:
        names = {f.stem for f in files}
        for orphan in sorted(baselines_dir.glob("*.json")):
            if orphan.stem not in names:
                if update:
                    orphan.unlink()
                status = REMOVED if update else ORPHANED
                rows.append(Row(orphan.stem, "baseline", str(orphan), None, None, status))
        if update:
            write_constraints(baselines_dir / CONSTRAINTS)
    return RegressResult(rows)


# The versions the baselines were made with, beside them: `.ci/run` installs with them (pip -c)
# and regress says when the installed ones differ (money is compared to 1e-9).
CONSTRAINTS = "constraints.txt"
NUMERIC = ("numpy", "numba", "llvmlite", "polars", "pyarrow")  # what the numbers depend on
NOT_PINNED = {"dhlp", "pip", "setuptools", "wheel"}


def installed_versions() -> dict[str, str]:
    found = {}
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name and name not in NOT_PINNED:
            found[name] = dist.version
    return found


def write_constraints(path: Path) -> None:
    lines = [f"{name}=={version}" for name, version in sorted(installed_versions().items())]
    header = "# Versions dhlp regress --update ran with; .ci/run installs with them (pip -c).\n"
    path.write_text(header + "\n".join(lines) + "\n")


def version_drift(baselines_dir: Path | None = None) -> list[str]:
    """'numba 0.68.1 (baselines: 0.61.0)' for each numeric package whose installed version is
    not the one the baselines were made with; [] when they agree or nothing was recorded."""
    path = (
        Path(baselines_dir) if baselines_dir else bundled.strategies() / "baselines"
    ) / CONSTRAINTS
    if not path.is_file():
        return []
    pinned = dict(
        line.strip().lower().split("==", 1)
        for line in path.read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    now = installed_versions()
    return [
        f"{name} {now.get(name, 'missing')} (baselines: {pinned[name]})"
        for name in NUMERIC
        if name in pinned and now.get(name) != pinned[name]
    ]


STATUS_STYLE = {OK: "green", UPDATED: "cyan", REMOVED: "cyan"} | {s: "bold red" for s in FAILING}


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value):
        return value[:12] + "…"  # a hash: enough to tell two apart
    if isinstance(value, float):
        return f"{value:.12g}"
    return str(value)


def diff_table(result: RegressResult, show_all: bool = False) -> Table:
    """The rows a reviewer needs: everything that is not `ok` (or every row with show_all)."""
    n_strategies = len({row.strategy for row in result.rows})
    verdict = "ok" if result.ok else f"{len(result.failures)} failing rows"
    table = Table(title=f"regress: {n_strategies} strategies, {verdict}", title_justify="left")
    for name, justify in (
        ("strategy", "left"),
        ("metric", "left"),
        ("baseline", "right"),
        ("current", "right"),
        ("rel diff", "right"),
        ("status", "left"),
    ):
        table.add_column(name, justify=justify)
    for row in result.rows:
        if show_all or row.status != OK:
            rel = "—" if row.rel_diff is None else f"{row.rel_diff:.2e}"
            style = STATUS_STYLE.get(row.status, "yellow")
            table.add_row(
                row.strategy,
                row.metric,
                _cell(row.baseline),
                _cell(row.current),
                rel,
                f"[{style}]{row.status}[/]",
            )
    return table


def _money(value: float) -> str:
    if round(value / 1e3) == 0:  # nothing to show at this scale: no "-0 k"
        return "0"
    if abs(value) >= 1e6:
        return f"{value / 1e6:+.2f} M"
    return f"{value / 1e3:+,.0f} k"


def _pct(value: float | None) -> str:
    return "0" if value == 0 else pct(value, 1)


def _bp(value: float | None) -> str:
    return "n/a" if value is None else f"{1e4 * value:,.0f} bp"


def load_baselines(baselines_dir: Path | None = None) -> list[dict[str, Any]]:
    """Every baseline document, by strategy name."""
    baselines_dir = Path(baselines_dir) if baselines_dir else bundled.strategies() / "baselines"
    docs = [json.loads(p.read_text()) for p in sorted(baselines_dir.glob("*.json"))]
    if not docs:
        raise InputError(f"{baselines_dir}: no baselines (run `dhlp regress --update`)")
    return docs


def markdown_table(docs: list[dict[str, Any]]) -> str:
    """The strategies compared, one row per path: the README's table.

    Return per notional is pnl_total over the option notional traded (notional_written), which
    does not scale with `[flow] notional_per_nav` as APY does; n/a in a baseline made before the
    engine measured it.
    """
    header = (
        "| strategy | data | capital | APY | return / notional | max drawdown | fees | hedge cost "
        "| cost / fees | theta | gamma | gamma / theta | filled / rejected | liquidation "
        "| insolvent |"
    )
    lines = [header, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for doc in docs:
        for path in doc["paths"]:
            label = doc["strategy"] + (
                f" (path {path['path_id']})" if len(doc["paths"]) > 1 else ""
            )
            theta, gamma = path["pnl_theta"], path["pnl_gamma"]
            notional = path.get("notional_written")
            insolvent = (
                f"yes, {path['insolvency_ts'][:10]}, bad debt {_money(path['bad_debt'])}"
                if path["insolvent"]
                else "no"
            )
            cells = [
                f"`{label}`",
                f"{Path(doc['market']).stem} {path['start'][:10]} → {path['end'][:10]}",
                f"{path['initial_nav'] / 1e6:g} M",
                _pct(path["apy"]),
                _bp(path["pnl_total"] / notional if notional else None),
                _pct(path["max_drawdown"]),
                _money(path["pnl_fees"]),
                _money(path["pnl_hedge_cost"]),
                _pct(path["hedge_cost_over_fees"]),
                _money(theta),
                _money(gamma),
                _pct(gamma / theta if theta else None),
                f"{path['n_trades']:,} / {path['n_rejected']:,}",
                _money(path["pnl_liquidation"]),
                insolvent,
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def strategy_table(baselines_dir: Path | None = None) -> str:
    """Markdown comparison of the strategies from their baselines, with what each asks.

    Generated, not typed, so the README cannot drift from what the engine computes.
    """
    docs = load_baselines(baselines_dir)
    lines = [markdown_table(docs)]
    lines += [f"- `{doc['strategy']}`: {doc['description']}" for doc in docs]
    engines = sorted({doc["engine_version"] for doc in docs})
    lines += ["", f"Generated by `dhlp regress --table` (engine {', '.join(engines)})."]
    return "\n".join(lines) + "\n"
