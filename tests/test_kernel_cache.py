"""The kernel cache: keyed on kernel sources and numba version only, shared by every copy of
the package, and a cold compile announced, in fresh processes with their own cache folders."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from scenarios import REPO, market_frame

from backtest.cli import COMPILING

pytestmark = pytest.mark.e2e  # fresh processes that compile: not part of the fast unit run

# One small pricing call (a few seconds to compile), then what numba and the package report.
PROBE = """
import json, numba
import backtest.kernel as kernel
from backtest.kernel import bs
from backtest.pricing import price
price("C", 2000.0, 2100.0, 7 / 365, 0.7)
stats = bs.price_many.stats
print(json.dumps({
    "package": kernel.__file__,
    "cache_dir": str(kernel.CACHE_DIR),
    "numba_cache_dir": numba.config.CACHE_DIR,
    "hits": sum(stats.cache_hits.values()),
    "misses": sum(stats.cache_misses.values()),
    "cached": kernel.cached(),
}))
"""


def copy_package(to: Path) -> Path:
    shutil.copytree(
        REPO / "backtest", to / "backtest", ignore=shutil.ignore_patterns("__pycache__")
    )
    return to


def probe(package_root: Path, cache: Path, before: str = "") -> dict:
    """PROBE in a fresh interpreter that imports the package at `package_root`."""
    env = {**os.environ, "PYTHONPATH": str(package_root), "DHLP_CACHE_DIR": str(cache)}
    done = subprocess.run(
        [sys.executable, "-c", before + PROBE],
        cwd=package_root,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def cache_files(cache: Path) -> dict[str, int]:
    return {str(p.relative_to(cache)): p.stat().st_mtime_ns for p in cache.rglob("*.nb*")}


def test_two_copies_of_the_package_share_one_cache(tmp_path):
    """A second install at another path (as pip install . makes) loads what the first compiled."""
    cache = tmp_path / "cache"
    first = probe(copy_package(tmp_path / "a"), cache)
    assert first["package"].startswith(str(tmp_path / "a"))
    assert first["misses"] == 1 and first["hits"] == 0
    assert not first["cached"]  # only the pricing functions were compiled, not the run kernel
    compiled = cache_files(cache)
    assert list(Path(first["cache_dir"]).glob("bs.price_many-*.nbi"))  # in it, not below it

    second = probe(copy_package(tmp_path / "b"), cache)
    assert second["package"].startswith(str(tmp_path / "b"))
    assert second["cache_dir"] == first["cache_dir"]
    assert second["hits"] == 1 and second["misses"] == 0
    assert cache_files(cache) == compiled  # nothing new written, nothing rewritten


def test_without_numbas_private_locator_classes_the_cache_is_numbas_own(tmp_path):
    """The fallback: numba without `_CacheLocator` still caches, in numba's own layout under
    the same folder."""
    hide = "import numba.core.caching as caching\ndel caching._CacheLocator\n"
    result = probe(copy_package(tmp_path / "a"), tmp_path / "cache", before=hide)
    assert result["numba_cache_dir"] == result["cache_dir"]
    assert result["misses"] == 1
    (index,) = Path(result["cache_dir"]).rglob("bs.price_many-*.nbi")
    assert index.parent.parent == Path(result["cache_dir"])  # numba's per-folder subfolder
    assert not result["cached"]  # still asked through numba's cache objects


def test_a_cold_run_says_it_compiles_and_a_warm_one_does_not(tmp_path):
    """Slow: one cold compile of the run kernel. Output captured, as in CI or a pipe."""
    market = tmp_path / "market.parquet"
    market_frame(n_ticks=24, seed=1).write_parquet(market)
    strategy = tmp_path / "tiny.toml"
    strategy.write_text(f'[data]\nmarket = "{market}"\n[flow]\ntrades_per_day = 10.0\n')
    env = {**os.environ, "DHLP_CACHE_DIR": str(tmp_path / "empty-cache")}

    def dhlp_run(out: str) -> subprocess.CompletedProcess:
        code = "from backtest.cli import main; main()"
        args = ["run", str(strategy), "--out", str(tmp_path / out), "--no-report"]
        done = subprocess.run(
            [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return done

    cold = dhlp_run("first")
    assert cold.stderr.count(COMPILING) == 1, cold.stderr
    assert any((tmp_path / "empty-cache").rglob("loop.ticks-*.nbi"))
    warm = dhlp_run("second")
    assert "compiling" not in warm.stderr, warm.stderr
    assert "run folder:" in warm.stdout
