"""Plots and the HTML report: one self-contained file, every image a real PNG, single and
multi-path runs."""

from __future__ import annotations

import base64
import datetime as dt
import re
import shutil
import tomllib
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scenarios import make_run

from backtest.results.plots import MAX_POINTS, plot_run, vega_utilisation
from backtest.results.report import build_report

pytestmark = pytest.mark.e2e

PNG = b"\x89PNG\r\n\x1a\n"
SINGLE_PLOTS = {"nav_spot", "attribution", "net_delta", "vega_utilisation", "drawdown"}


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("single"))


@pytest.fixture(scope="module")
def multi(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("multi"), n_paths=6)


def check_self_contained(html: str) -> list[bytes]:
    """No URL to fetch anything from; returns the decoded images."""
    for pattern in ("http://", "https://", 'src="//', "<script", "<link", "@import", "url("):
        assert pattern not in html, pattern
    sources = re.findall(r'<img [^>]*src="([^"]*)"', html)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    images = [base64.b64decode(s.split(",", 1)[1], validate=True) for s in sources]
    assert all(image.startswith(PNG) for image in images)
    return images


def test_plots_are_non_empty_pngs(single):
    files = plot_run(single)
    assert {f.stem for f in files} == SINGLE_PLOTS
    for f in files:
        assert f.parent == single / "plots"
        assert f.stat().st_size > 10_000 and f.read_bytes().startswith(PNG)


def test_report_is_self_contained_and_complete(single):
    path = build_report(single)
    assert path == single / "report.html"
    html = path.read_text(encoding="utf-8")
    images = check_self_contained(html)
    assert len(images) == len(SINGLE_PLOTS)
    assert "A small test pool &lt;with markup&gt; &amp; hedging" in html  # escaped
    assert single.name in html and "Key metrics" in html
    summary = pl.read_parquet(single / "summary.parquet")
    attribution = html.split("PnL attribution", 1)[1].split("Plots", 1)[0]
    for component in ("delta", "gamma", "vega", "theta", "fees", "hedge_cost", "liquidation"):
        assert f"<td>{component}</td>" in attribution
    assert f"{summary['pnl_total'][0]:,.0f}" in attribution
    assert "Distribution across paths" not in html
    # A report is shared: its data files by name and hash, never by where they lie here.
    market = tomllib.loads((single / "config.toml").read_text())["strategy"]["data"]["market"]
    assert str(Path(market).parent) not in html and "market.parquet (sha256 " in html


def test_multi_path_report_has_fan_and_histogram(multi):
    html = build_report(multi).read_text(encoding="utf-8")
    images = check_self_contained(html)
    names = {p.stem for p in (multi / "plots").glob("*.png")}
    assert names == SINGLE_PLOTS | {"nav_fan", "lp_returns"}
    assert len(images) == len(names)
    assert "Distribution across paths" in html and "expected shortfall 99 %" in html
    assert "Statistics across 6 paths" in html


def test_report_of_a_summary_only_run(multi, tmp_path):
    """Runs that kept only summaries (no detail tables) still get a report from summary.parquet."""
    folder = tmp_path / multi.name
    shutil.copytree(multi, folder, ignore=shutil.ignore_patterns("*.png", "report.html"))
    for name in ("steps", "trades", "hedges", "series"):
        (folder / f"{name}.parquet").unlink()
    html = build_report(folder).read_text(encoding="utf-8")
    assert len(check_self_contained(html)) == 1  # the LP-return histogram
    assert "Distribution across paths" in html


def test_a_vega_hedged_run_plots_the_book_before_and_after_the_hedge(tmp_path):
    folder = make_run(tmp_path, vega_hedge={"policy": "band", "band": 1e-6})
    steps = pl.read_parquet(folder / "steps.parquet")
    assert (steps["listed_vega"] != 0).any()
    assert {f.stem for f in plot_run(folder)} == SINGLE_PLOTS


def test_the_vega_plot_thins_a_long_run_with_both_vega_lines(tmp_path):
    """More ticks than MAX_POINTS: every column drawn must survive the bucketing."""
    n = 3 * MAX_POINTS
    ts = pl.datetime_range(
        dt.datetime(2024, 1, 1),
        dt.datetime(2024, 1, 1) + dt.timedelta(hours=n - 1),
        "1h",
        time_zone="UTC",
        eager=True,
    )
    wave = np.sin(np.arange(n) / 50.0)
    steps = pl.DataFrame(
        {
            "ts": ts,
            "book_vega": 1e4 * wave,
            "listed_vega": 5e3 * wave,
            "utilisation": 0.3 + 0 * wave,
        }
    )
    path = vega_utilisation(steps, tmp_path / "vega.png")
    assert path.read_bytes().startswith(PNG)


def test_a_run_that_lends_gets_a_lending_plot(tmp_path):
    folder = make_run(tmp_path, lending={"share": 0.8, "market_usd": 5e5})
    assert (pl.read_parquet(folder / "steps.parquet")["lent"] > 0).any()
    files = plot_run(folder)
    assert {f.stem for f in files} == SINGLE_PLOTS | {"lending"}
    assert (folder / "plots" / "lending.png").read_bytes().startswith(PNG)
