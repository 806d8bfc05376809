"""What `dhlp bench` prints: this machine's speed on a year of 1-minute ticks (never a test).

The case: 525,600 ticks of GBM and 100,000 trades on a listed board (weekly Friday 08:00
expiries up to four weeks out, strikes on a 50-wide grid: about 170 live series), threshold
hedge, sqrt-impact slippage, read from Parquet files. The kernel is timed against the floor, a
bare Black-Scholes price/delta/gamma/vega loop over the same series-ticks, in the same process;
start-up and the cold compile are timed in fresh processes.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numba
import numpy as np
import polars as pl

from backtest.config import build_strategy
from backtest.inputs.flow import public_flow
from backtest.inputs.market import Market
from backtest.kernel.floor import greeks_floor
from backtest.plan import Plan
from backtest.runner import DEFAULT_STRATEGY, ENGINE_VERSION, prepare, run, simulate

MINUTE_NS = 60 * 1_000_000_000
YEAR_OF_MINUTES = 525_600


def gbm_market(n_ticks: int, seed: int = 0, spot0: float = 2000.0, vol: float = 0.7) -> Market:
    """1-minute GBM ticks starting 2024-01-01 with a gently moving IV around `vol`."""
    rng = np.random.default_rng(seed)
    dt = 1.0 / (365 * 1440)
    shocks = rng.standard_normal(n_ticks - 1)
    log_s = np.concatenate([[0.0], np.cumsum(-0.5 * vol**2 * dt + vol * np.sqrt(dt) * shocks)])
    iv = vol * np.exp(np.cumsum(rng.normal(0.0, 0.002, n_ticks)) * 0.1)
    ts = np.datetime64("2024-01-01", "ns").astype(np.int64) + MINUTE_NS * np.arange(n_ticks)
    zeros = np.zeros(n_ticks)
    return Market(
        ts=ts.astype(np.int64),
        spot=spot0 * np.exp(log_s),
        iv=iv,
        rate=zeros,
        funding=zeros,
        path_ids=np.array([0], np.int64),
        offsets=np.array([0, n_ticks], np.int64),
    )


def board_strategy(n_ticks: int, n_trades: int) -> dict[str, Any]:
    """Weekly expiries out to 4 weeks, strikes 50 apart around spot: about 170 live series."""
    return {
        "name": "bench",
        "flow": {
            "trades_per_day": n_trades / (n_ticks / 1440),
            "iv_intensity": 0.0,
            "expiries": ["weekly"],
            "max_tenor_days": 28,
            "strike_step": 50.0,
            "moneyness_sd": 0.09,
            "buy_fraction": 0.55,
        },
        "pool": {"initial_capital": 1e9, "max_utilisation": 1.0},
        "hedge": {"policy": "threshold", "threshold": 0.001},
        "slippage": {"model": "sqrt_impact"},
    }


def write_case(folder: Path, n_ticks: int, n_trades: int) -> Path:
    """Market, flow and strategy files of the case in `folder`; returns the strategy file."""
    import tomli_w

    market = gbm_market(n_ticks)
    utc = pl.Datetime("us", "UTC")
    frame = pl.DataFrame({"ts": market.ts // 1000, "spot": market.spot, "iv": market.iv})
    frame.with_columns(pl.col("ts").cast(utc)).write_parquet(folder / "market.parquet")
    config = board_strategy(n_ticks, n_trades)
    flow = Plan(build_strategy(config, "bench"), market).whole().flow  # synthetic, seeded
    public_flow(flow).write_parquet(folder / "flow.parquet")
    config["data"] = {"market": "market.parquet", "flow": "flow.parquet"}
    path = folder / "bench.toml"
    path.write_bytes(tomli_w.dumps(config).encode())
    return path


def floor_inputs(plan: Plan) -> tuple[np.ndarray, ...]:
    """The floor's series-ticks: each series from the tick of its first trade to its expiry
    (a position, once opened, is live until then unless closed out exactly)."""
    batch = plan.whole()
    fl, mk = batch.aligned, batch.market
    first = np.full(len(fl.series_expiry), len(mk.ts), np.int64)
    np.minimum.at(first, fl.series, fl.tick)
    last = np.maximum(np.searchsorted(mk.ts, fl.series_expiry).astype(np.int64), first)
    return (
        *(mk.ts, mk.spot, mk.iv, mk.rate),
        *(fl.series_expiry, fl.series_strike, fl.series_kind, first, last),
    )


def best_of(repeats: int, fn) -> tuple[float, Any]:
    """Fastest of `repeats` calls (this machine is shared: the minimum is the least disturbed)."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def fresh_process(args: list[str], env: dict[str, str] | None = None) -> float:
    """Wall time of a command in a fresh interpreter."""
    start = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True, env={**os.environ, **(env or {})})
    return time.perf_counter() - start


def start_up(folder: Path) -> dict[str, float]:
    """`dhlp --help`, and a cached `dhlp run --no-report` of the default strategy beside the
    kernel's own share of it (the rest is imports, reading, tables and writing)."""
    script = Path(sys.executable).with_name("dhlp")  # what a user types, where it is installed
    dhlp = (
        [str(script)]
        if script.exists()
        else [sys.executable, "-c", "import backtest.cli as c; c.main()"]
    )
    fresh_process([*dhlp, "run", "--no-report", "--force", "--out", str(folder)])  # warm cache
    help_s = min(fresh_process([*dhlp, "--help"]) for _ in range(3))
    run_s = min(
        fresh_process([*dhlp, "run", "--no-report", "--force", "--out", str(folder)])
        for _ in range(3)
    )
    batch = prepare(DEFAULT_STRATEGY).whole()
    kernel_s, _ = best_of(3, lambda: simulate(batch))
    return {
        "help_s": help_s,
        "default_run_s": run_s,
        "default_run_kernel_s": kernel_s,
        "default_run_outside_kernel_s": run_s - kernel_s,
    }


def cold_compile(folder: Path) -> float:
    """Seconds to compile the kernel from nothing: the default strategy's kernel in a fresh
    process with an empty numba cache, minus the same once that cache is filled."""
    code = (
        "import time; from backtest.runner import prepare, simulate; b = prepare().whole(); "
        "t = time.perf_counter(); simulate(b); print(time.perf_counter() - t)"
    )
    env = {"DHLP_CACHE_DIR": str(folder / "numba-cache")}

    def timed() -> float:
        out = subprocess.run(
            [sys.executable, "-c", code],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, **env},
        )
        return float(out.stdout.strip().splitlines()[-1])

    cold = timed()
    return cold - timed()


def machine() -> str:
    """Architecture, cores and CPU model (from /proc/cpuinfo where there is one)."""
    cpuinfo = Path("/proc/cpuinfo")
    names = [
        line.split(":", 1)[1].strip()
        for line in (cpuinfo.read_text().splitlines() if cpuinfo.exists() else [])
        if line.startswith("model name")
    ]
    model = names[0] if names else platform.processor() or "unknown CPU"
    return f"{platform.machine()}, {os.cpu_count()} cores, {model}"


def measure(
    n_ticks: int = YEAR_OF_MINUTES,
    n_trades: int = 100_000,
    compile_time: bool = True,
    with_start_up: bool = True,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="dhlp-bench-") as tmp:
        folder = Path(tmp)
        strategy_file = write_case(folder, n_ticks, n_trades)
        plan = prepare(strategy_file)
        batch = plan.whole()
        simulate(batch)  # compile, or load from the cache
        floor_args = floor_inputs(plan)
        greeks_floor(*floor_args)
        kernel_s, out = best_of(3, lambda: simulate(batch))
        floor_s, (floor_ticks, _) = best_of(3, lambda: greeks_floor(*floor_args))
        series_ticks = int(out.records.steps["n_live_series"].sum())
        run_s, _ = best_of(
            3, lambda: run(strategy_file, out=folder / "runs", force=True, report=False)
        )
        floor_rate = floor_ticks / floor_s
        result = {
            "engine_version": ENGINE_VERSION,
            "machine": machine(),
            "python": platform.python_version(),
            "numba": numba.__version__,
            "ticks": n_ticks,
            "trades_filled": int((out.records.trades["filled"] > 0).sum()),
            "mean_live_series": series_ticks / n_ticks,
            "series_ticks": series_ticks,
            "kernel_s": kernel_s,
            "kernel_series_ticks_per_s": series_ticks / kernel_s,
            "floor_series_ticks_per_s": floor_rate,
            "kernel_vs_floor": kernel_s / (series_ticks / floor_rate),
            "run_no_report_s": run_s,
            "run_vs_floor": run_s / (series_ticks / floor_rate),
        }
        if with_start_up:
            result["start_up"] = start_up(folder)
        if compile_time:
            result["cold_compile_s"] = cold_compile(folder)
        return result


if __name__ == "__main__":
    print(json.dumps(measure(), indent=2))
