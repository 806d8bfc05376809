"""What the CLI prints around the numbers: suggestions for mistyped names."""

from __future__ import annotations

import pytest

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
