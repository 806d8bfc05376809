"""What the CLI prints around the numbers: progress, suggestions."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from backtest import cli
from backtest.cli import COMPILING, Progressing
from backtest.errors import InputError, did_you_mean


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
