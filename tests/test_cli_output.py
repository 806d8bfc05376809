"""What the CLI prints around the numbers: progress, help, suggestions, table widths, signs."""

from __future__ import annotations

import io
from pathlib import Path

import polars as pl
import pytest
from rich.console import Console
from typer.testing import CliRunner

from backtest import cli
from backtest.cli import COMPILING, DISTRIBUTION, Progressing, app, cell, sweep_table
from backtest.errors import InputError, did_you_mean
from backtest.fmt import pct
from backtest.sweep import SweepResult


def test_close_names_are_suggested():
    assert did_you_mean("treshold", ["threshold", "policy"]) == "; did you mean 'threshold'?"
    assert did_you_mean("zzz", ["threshold", "policy"]) == ""
    assert did_you_mean("hedging", ["lending", "hedge"]) == "; did you mean 'hedge'?"
    assert did_you_mean("edge", ["lending", "hedge"]) == "; did you mean 'hedge'?"


def test_an_unknown_strategy_name_suggests_the_closest_bundled_one():
    from backtest.runner import strategy_path

    assert strategy_path("unhedged").name == "unhedged.toml"
    with pytest.raises(InputError, match=r"did you mean 'unhedged'\?.*dhlp strategies"):
        strategy_path("unhedgd")


def test_without_a_terminal_progress_is_a_plain_line_each_tenth(capsys):
    with Progressing("sweep", "points") as progress:
        progress.update(0, 20)
        progress.note(COMPILING)
        for done in range(1, 21):
            progress.update(done, 20, description=f"point {done}")
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == COMPILING
    assert [line.split(",")[0] for line in lines[1:]] == [
        f"sweep: {done}/20 points" for done in range(2, 21, 2)
    ]
    assert "left" in lines[1] and "left" not in lines[-1]


def test_a_single_step_prints_no_progress_line(capsys):
    with Progressing("running", "paths") as progress:
        progress.update(0, 1)
        progress.update(1, 1)
    assert capsys.readouterr().err == ""


def test_in_a_terminal_the_bar_shows_count_time_left_and_the_note(monkeypatch):
    monkeypatch.setattr(cli, "err", Console(file=io.StringIO(), force_terminal=True, width=150))
    with Progressing("running", "paths") as progress:
        progress.update(0, 10)
        progress.note(COMPILING)
        screen = Console(file=io.StringIO(), width=150)
        screen.print(progress.bar.get_renderable())
        shown = screen.file.getvalue()
        assert f"running ({COMPILING})" in shown and "0/10" in shown
        progress.update(3, 10)
        screen.print(progress.bar.get_renderable())
        shown = screen.file.getvalue()
        assert "3/10" in shown and "-:--:--" in shown  # time left, not yet estimated


def test_percentages_never_print_negative_zero():
    assert pct(-0.0) == "0.00 %" and pct(-1e-9) == "0.00 %" and pct(-0.00004, 1) == "0.0 %"
    assert pct(-0.0123) == "-1.23 %" and pct(None) == "n/a"
    assert cell(-0.0) == "0" and cell(-1.5e-7) == "-1.5e-07" and cell(None) == ""


def sweep_result(n_points: int, **columns) -> SweepResult:
    grid = {"hedge.threshold": [0.01 * (k + 1) for k in range(n_points)]}
    frame = pl.DataFrame(
        {
            **grid,
            "run_id": [f"tiny-strategy-{k:010d}" for k in range(n_points)],
            **{key: [0.0123] * n_points for key, *_ in DISTRIBUTION},
            "var_99": [0.03] * n_points,
            **columns,
        }
    )
    return SweepResult("tiny-strategy-0123456789", Path("."), grid, frame, [])


@pytest.mark.parametrize("width", [60, 80, 100, 200])
def test_the_sweep_table_fits_the_terminal(width):
    result = sweep_result(3, p_insolvent=[-0.0, 0.0, 0.5])
    console = Console(file=io.StringIO(), width=width)
    console.print(sweep_table(result, "var_99", console))
    text = console.file.getvalue()
    assert max(len(line) for line in text.splitlines()) <= width
    assert "-0.00 %" not in text and "threshold" in text and "VaR95" in text
    assert ("tiny-strategy-0000000001" in text) == (width == 200)
    if width < 200:
        assert "too wide to show: run_id" in " ".join(text.split())


def help_words(*command: str) -> str:
    """A command's --help as single-spaced words (the help is wrapped to the terminal)."""
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    return " ".join(result.output.replace("│", " ").split())


def test_help_says_what_set_repeats_names_and_views():
    run = help_words("run")
    assert "repeatable" in run and "docs/strategy.toml" in run and "docs/design.md" in run
    assert "bundled strategy" in run and "dhlp strategies" in run
    sweep = help_words("sweep")
    assert "repeatable" in sweep and "docs/strategy.toml" in sweep
    from backtest.results.catalog import VIEWS

    sql = help_words("sql")
    assert all(f" {view}" in sql for view in VIEWS), sql


def test_sweep_metric_help_lists_every_distribution_metric_and_the_defaults():
    from backtest.results.summary import distribution

    summary = pl.DataFrame(
        {
            "lp_return": [0.01, -0.02, 0.03],
            "insolvent": [False, False, True],
            "max_drawdown": [0.01, 0.02, 0.03],
            "bad_debt": [0.0, 0.0, 5.0],
            "apy": [0.1, -0.2, 0.3],
            "final_nav": [1.0, 2.0, 3.0],
        }
    )
    words = help_words("sweep")
    for key in distribution(summary):
        if key != "n_paths":
            assert key in words, key
    assert "lp_return_mean (default)" in words and "lp_return (default)" in words
