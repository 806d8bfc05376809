"""`regress`: baselines round-trip, PnL changes fail by name, data and baseline problems are told
apart from PnL changes, and baselines do not depend on the process, worker count or numba cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import polars as pl
import pytest
from rich.console import Console
from scenarios import REPO as PROJECT_ROOT
from scenarios import market_frame

from backtest.errors import InputError
from backtest.regress import (
    CHANGED,
    CONFIG_CHANGED,
    DATA_CHANGED,
    ENGINE_CHANGED,
    ERROR,
    MISSING,
    OK,
    ORPHANED,
    REMOVED,
    UPDATED,
    diff_table,
    regress,
    strategy_table,
)
from backtest.runner import DEFAULT_STRATEGY

pytestmark = pytest.mark.e2e

STRATEGY = """\
description = "{description}"

[data]
market = "data/market.parquet"
flow = "synthetic"

[flow]
seed = {seed}
trades_per_day = 60
size_median = 2.0

[pool]
initial_capital = 1_000_000.0

[pricing]
base_fee = {base_fee}

[hedge]
policy = "{policy}"
"""


def write_strategy(
    folder: Path, name: str, base_fee: float = 0.01, seed: int = 7, policy: str = "threshold"
) -> None:
    text = STRATEGY.format(description=f"test {name}", base_fee=base_fee, seed=seed, policy=policy)
    (folder / f"{name}.toml").write_text(text)


def write_market(root: Path, seed: int = 0) -> None:
    (root / "data").mkdir(exist_ok=True)
    market_frame(n_ticks=120, seed=seed).write_parquet(root / "data" / "market.parquet")


@pytest.fixture
def library(tmp_path: Path) -> Path:
    """A strategies folder of two small strategies on a generated market, without baselines."""
    write_market(tmp_path)
    folder = tmp_path / "strategies"
    folder.mkdir()
    write_strategy(folder, "hedged")
    write_strategy(folder, "naked", policy="none")
    return folder


@pytest.fixture
def baselined(library: Path) -> Path:
    assert regress(library, update=True, jobs=1).ok
    return library


def statuses(result, strategy: str | None = None) -> set[str]:
    return {r.status for r in result.rows if strategy is None or r.strategy == strategy}


def test_update_writes_baselines_then_regress_passes(library):
    first = regress(library, update=True, jobs=1)
    assert first.ok
    assert statuses(first) == {UPDATED}  # no baseline before: every strategy is new
    doc = json.loads((library / "baselines" / "hedged.json").read_text())
    assert {"engine_version", "inputs", "config_sha256", "paths"} <= doc.keys()
    assert doc["inputs"]["seed"] == 7 and doc["inputs"]["flow_sha256"] == "synthetic"
    assert doc["paths"][0]["n_trades"] > 0 and doc["paths"][0]["n_hedges"] > 0

    again = regress(library, jobs=1)
    assert again.ok and statuses(again) == {OK}
    assert {r.strategy for r in again.rows} == {"hedged", "naked"}
    assert "ok" in render(again)


def test_fee_change_fails_naming_strategy_and_metric(baselined):
    write_strategy(baselined, "hedged", base_fee=0.02)
    result = regress(baselined, jobs=1)
    assert not result.ok
    failed = {(r.strategy, r.metric) for r in result.failures}
    assert ("hedged", "pnl_fees") in failed and ("hedged", "final_nav") in failed
    assert all(r.status == CHANGED for r in result.failures)
    assert {r.strategy for r in result.failures} == {"hedged"}
    assert statuses(result, "naked") == {OK}
    fees = next(r for r in result.rows if (r.strategy, r.metric) == ("hedged", "pnl_fees"))
    assert fees.current > fees.baseline and fees.rel_diff > 0.1
    # the edited strategy file is pointed out, as information
    assert any(r.status == CONFIG_CHANGED for r in result.rows if r.strategy == "hedged")
    text = render(result)
    assert "hedged" in text and "pnl_fees" in text and "changed" in text

    assert regress(baselined, update=True, jobs=1).ok
    assert regress(baselined, jobs=1).ok


def test_changed_data_is_a_data_mismatch_not_a_pnl_change(baselined):
    write_market(baselined.parent, seed=1)
    result = regress(baselined, jobs=1)
    assert not result.ok
    assert {(r.strategy, r.metric) for r in result.failures} == {
        ("hedged", "market_sha256"),
        ("naked", "market_sha256"),
    }
    assert statuses(result) == {DATA_CHANGED}


def test_changed_seed_is_an_input_mismatch(baselined):
    write_strategy(baselined, "naked", policy="none", seed=8)
    result = regress(baselined, jobs=1)
    assert [(r.metric, r.baseline, r.current) for r in result.failures] == [("seed", 7, 8)]
    assert result.failures[0].status == DATA_CHANGED


def test_missing_and_orphaned_baselines(baselined):
    (baselined / "baselines" / "naked.json").unlink()
    write_strategy(baselined, "newcomer")
    (baselined / "hedged.toml").rename(baselined / "hedged.toml.off")
    result = regress(baselined, jobs=1)
    assert not result.ok
    assert [(r.strategy, r.metric, r.status) for r in result.failures] == [
        ("naked", "baseline", MISSING),
        ("newcomer", "baseline", MISSING),
    ]
    assert statuses(result, "hedged") == {ORPHANED}  # reported, not a failure by itself

    updated = regress(baselined, update=True, jobs=1)
    assert updated.ok and statuses(updated, "hedged") == {REMOVED}
    assert sorted(p.stem for p in (baselined / "baselines").glob("*.json")) == [
        "naked",
        "newcomer",
    ]


def test_a_strategy_that_does_not_run_is_an_error_and_gets_no_baseline(library):
    (library / "broken.toml").write_text("[pool]\nnonsense = 1\n")
    result = regress(library, update=True, jobs=1)
    assert not result.ok
    [failure] = result.failures
    assert (failure.strategy, failure.status) == ("broken", ERROR)
    assert "nonsense" in failure.current and "unknown key" in failure.current
    assert not (library / "baselines" / "broken.json").exists()
    assert (library / "baselines" / "hedged.json").exists()


def test_engine_version_change_is_reported_not_failed(baselined):
    path = baselined / "baselines" / "hedged.json"
    doc = json.loads(path.read_text())
    doc["engine_version"] = "0.0.1+old"
    path.write_text(json.dumps(doc))
    result = regress(baselined, jobs=1)
    assert result.ok
    assert statuses(result, "hedged") == {OK, ENGINE_CHANGED}


def test_relative_tolerance_and_exact_counts(baselined):
    path = baselined / "baselines" / "hedged.json"
    doc = json.loads(path.read_text())
    row = doc["paths"][0]
    row["final_nav"] *= 1 + 1e-12
    path.write_text(json.dumps(doc))
    assert regress(baselined, only=["hedged"], jobs=1).ok
    assert not regress(baselined, only=["hedged"], jobs=1, rtol=1e-14).ok

    row["n_hedges"] += 1
    path.write_text(json.dumps(doc))
    result = regress(baselined, only=["hedged"], jobs=1, rtol=1.0)  # counts ignore rtol
    assert [r.metric for r in result.failures] == ["n_hedges"]


def test_only_filters_and_unknown_names_are_input_errors(baselined):
    write_strategy(baselined, "naked", policy="none", base_fee=0.05)
    result = regress(baselined, only=["hedged"], jobs=1)
    assert result.ok and {r.strategy for r in result.rows} == {"hedged"}
    before = (baselined / "baselines" / "naked.json").read_text()
    assert regress(baselined, only=["hedged"], update=True, jobs=1).ok
    assert (baselined / "baselines" / "naked.json").read_text() == before
    with pytest.raises(InputError, match="no strategy named 'nope'"):
        regress(baselined, only=["nope"])
    with pytest.raises(InputError, match="strategies folder not found"):
        regress(baselined / "missing")


def test_multi_path_metrics_are_named_per_path(library):
    paths = [market_frame(n_ticks=120, seed=s).with_columns(path_id=pl.lit(s)) for s in (0, 1)]
    pl.concat(paths).write_parquet(library.parent / "data" / "market.parquet")
    assert regress(library, only=["hedged"], update=True, jobs=1).ok
    write_strategy(library, "hedged", base_fee=0.02)
    failed = {r.metric for r in regress(library, only=["hedged"], jobs=1).failures}
    assert {"pnl_fees[path 0]", "pnl_fees[path 1]"} <= failed


def test_serial_and_parallel_runs_agree(baselined):
    serial = regress(baselined, jobs=1)
    parallel = regress(baselined, jobs=2)
    assert serial.rows == parallel.rows


def test_baselines_are_identical_from_fresh_processes_cold_and_warm_cache(library, tmp_path):
    """Slow (one numba compile): fresh interpreters, one of them with an empty kernel cache."""
    script = (
        "import sys; from pathlib import Path; from backtest.regress import regress; "
        "assert regress(Path(sys.argv[1]), Path(sys.argv[2]), update=True, jobs=1).ok"
    )
    outputs = []
    for name, cache in (("cold", tmp_path / "empty-cache"), ("warm", None)):
        env = dict(os.environ)
        if cache is not None:
            cache.mkdir()
            env["DHLP_CACHE_DIR"] = str(cache)
        out = tmp_path / name
        subprocess.run([sys.executable, "-c", script, str(library), str(out)], env=env, check=True)
        outputs.append({p.name: p.read_bytes() for p in sorted(out.glob("*.json"))})
    assert list(outputs[0]) == ["hedged.json", "naked.json"]
    assert outputs[0] == outputs[1]
    assert any((tmp_path / "empty-cache").rglob("*.nbi"))  # the first process did compile


def test_strategy_table_is_markdown_from_baselines(baselined):
    text = strategy_table(baselined / "baselines")
    lines = text.splitlines()
    assert lines[0].startswith("| strategy |") and "APY" in lines[0] and "gamma" in lines[0]
    assert lines[2].startswith("| `hedged` |") and lines[3].startswith("| `naked` |")
    assert "- `naked`: test naked" in text
    with pytest.raises(InputError, match="no baselines"):
        strategy_table(baselined / "nothing-here")


def test_bundled_strategies_are_valid_and_named_after_their_files():
    from backtest.config import load_strategy

    folder = PROJECT_ROOT / "strategies"
    files = sorted(folder.glob("*.toml"))
    assert DEFAULT_STRATEGY in files and len(files) >= 9
    for path in files:
        strategy = load_strategy(path)
        raw = tomllib.loads(path.read_text())
        assert strategy.description, path.name
        assert raw.get("name", path.stem) == path.stem
        assert path.read_text().startswith("#"), f"{path.name}: say what it demonstrates"
        assert path.stem == path.stem.lower() and "_" not in path.stem


def render(result) -> str:
    console = Console(record=True, width=200)
    console.print(diff_table(result))
    return console.export_text()


def test_every_bundled_strategy_asks_a_question():
    from backtest import bundled

    assert bundled.strategies() == PROJECT_ROOT / "strategies"  # in a clone: the repository's
    for path in sorted(bundled.strategies().glob("*.toml")):
        asked = bundled.question(path)
        assert asked.endswith("?") and len(asked) > 20, path.name


def test_regress_names_installed_versions_that_differ_from_the_baselines(tmp_path):
    from backtest.regress import CONSTRAINTS, installed_versions, version_drift

    now = installed_versions()
    pins = {name: now[name] for name in ("numpy", "numba", "polars")}
    (tmp_path / CONSTRAINTS).write_text("\n".join(f"{n}=={v}" for n, v in pins.items()))
    assert version_drift(tmp_path) == []
    (tmp_path / CONSTRAINTS).write_text(f"numba==0.0.1\nnumpy=={pins['numpy']}\n")
    assert version_drift(tmp_path) == [f"numba {pins['numba']} (baselines: 0.0.1)"]
    assert version_drift(tmp_path / "none-here") == []
    # The bundled baselines carry the versions they were made with.
    shipped = PROJECT_ROOT / "strategies" / "baselines" / CONSTRAINTS
    assert "numba==" in shipped.read_text() and "dhlp==" not in shipped.read_text()
