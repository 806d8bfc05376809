"""Benchmark (not collected by pytest): a 3 x 3 sweep of many-path points, on 1 and 2 jobs.

    python tests/bench_sweep.py [--paths 1000] [--ticks 721] [--modes local:1,local:2]
                                [--keep all|summary]

Simulates a month of hourly GBM ticks per path, then times where one point's time goes (flow
generation, kernel, table building, summary, writing), and each sweep mode in a fresh process so
its peak memory is its own: wall time, a rerun that skips every point, and peak RSS of the sweep
process and of its largest worker. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from backtest import runner
from backtest.inputs.simulate import simulate, write_paths
from backtest.results import tables
from backtest.results.runfolder import RunFolderWriter
from backtest.results.summary import summarise
from backtest.sweep import sweep

GRID = {"hedge.threshold": [0.01, 0.02, 0.05], "pricing.base_fee": [0.005, 0.01, 0.02]}
STRATEGY = runner.DEFAULT_STRATEGY


def peak_mb() -> tuple[float, float]:
    """Peak RSS of this process and of its largest finished child, in MB.

    This process's from VmHWM: Linux carries ru_maxrss across exec, so a process started by a big
    one would report its parent's peak. A spawned worker's ru_maxrss starts at this process's size
    when it was started, which is below its own peak.
    """
    status = Path("/proc/self/status").read_text()
    own = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM"))
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(own / 1024, 1), round(children / 1024, 1)


def stages(paths: Path, out: Path, keep: str) -> dict[str, float]:
    """One point of the grid, run stage by stage as `runner.run` does, with a clock on each."""
    clock = dict.fromkeys(("prepare", "flow", "kernel", "tables", "summary", "write"), 0.0)
    start = time.perf_counter()
    plan = runner.prepare(STRATEGY, market=paths, run_id="stages")
    clock["prepare"] = time.perf_counter() - start
    with RunFolderWriter(out / "stages", plan.resolved, keep_tables=keep == "all") as writer:
        mark = time.perf_counter()
        for batch in plan.batches():
            now = time.perf_counter()
            clock["flow"] += now - mark  # a batch's synthetic flow is generated as it is drawn
            kernel_out = runner.simulate(batch)
            clock["kernel"] += time.perf_counter() - now
            now = time.perf_counter()
            built = tables.build(batch, kernel_out)
            clock["tables"] += time.perf_counter() - now
            now = time.perf_counter()
            summary = summarise(batch, built)
            clock["summary"] += time.perf_counter() - now
            now = time.perf_counter()
            writer.add(summary, built)
            clock["write"] += time.perf_counter() - now
            mark = time.perf_counter()
        now = time.perf_counter()
    clock["write"] += time.perf_counter() - now  # closing the Parquet files, summary, rename
    clock["total"] = time.perf_counter() - start
    return {k: round(v, 2) for k, v in clock.items()}


def measure(paths: Path, out: Path, executor: str, jobs: int, keep: str) -> dict:
    """One sweep mode (run in its own process by main)."""
    start = time.perf_counter()
    result = sweep(STRATEGY, GRID, paths=paths, out=out, executor=executor, jobs=jobs, keep=keep)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    rerun = sweep(STRATEGY, GRID, paths=paths, out=out, executor=executor, jobs=jobs, keep=keep)
    assert rerun.n_reused == len(rerun.points) and rerun.frame.equals(result.frame)
    own, worker = peak_mb()
    return {
        "mode": f"{executor}:{jobs}",
        "seconds": round(seconds, 1),
        "seconds_per_point": round(seconds / result.frame.height, 2),
        "rerun_all_skipped_seconds": round(time.perf_counter() - start, 1),
        "peak_rss_mb_sweep_process": own,
        "peak_rss_mb_largest_worker": worker,
        "lp_return_mean": result.frame["lp_return_mean"].round(6).to_list(),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--paths", type=int, default=1000)
    parser.add_argument("--ticks", type=int, default=30 * 24 + 1)
    parser.add_argument("--modes", default="local:1,local:2")
    parser.add_argument("--keep", default="all", choices=("all", "summary"))
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # internal: one mode, JSON out
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        executor, jobs = args.measure.split(":")
        out = args.dir / f"runs-{executor}-{jobs}"
        print(json.dumps(measure(args.dir / "paths.parquet", out, executor, int(jobs), args.keep)))
        return

    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        frame = simulate("gbm", n_paths=args.paths, n_ticks=args.ticks, step="1h", seed=1)
        paths = write_paths(frame, folder / "paths.parquet")
        simulated = time.perf_counter() - start
        tiny = write_paths(simulate("gbm", n_paths=2, n_ticks=48), folder / "tiny.parquet")
        runner.run(STRATEGY, market=tiny, out=folder / "warm-up")  # compile the kernel once
        report = {
            "paths": args.paths,
            "ticks_per_path": args.ticks,
            "points": 9,
            "keep": args.keep,
            "cores": os.cpu_count(),
            "load_average_at_start": os.getloadavg()[0],  # other work on the machine skews times
            "simulate_seconds": round(simulated, 2),
            "one_point_stages_seconds": stages(paths, folder, args.keep),
            "modes": [],
        }
        for mode in args.modes.split(","):
            command = [sys.executable, __file__, "--measure", mode, "--dir", tmp]
            command += ["--keep", args.keep]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            report["modes"].append(json.loads(done.stdout.strip().splitlines()[-1]))
        report["load_average_at_end"] = os.getloadavg()[0]
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
