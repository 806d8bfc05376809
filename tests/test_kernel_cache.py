"""The kernel cache: keyed on kernel sources and numba version only, so every copy of the
package shares it; in fresh processes with their own cache folders."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from scenarios import REPO

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
