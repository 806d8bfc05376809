"""What each entry point imports: `dhlp --help` and every command load only the CLI shell, and
a run loads the plotting and query libraries only when it writes a report or queries runs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

HEAVY = ("matplotlib", "duckdb", "jinja2", "numba", "polars", "pyarrow")


def loaded_after(statement: str) -> set[str]:
    """Top-level packages of HEAVY that `statement` imports, run in a fresh interpreter (the
    module list is the last line it prints)."""
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return {name.split(".")[0] for name in json.loads(done.stdout.splitlines()[-1])} & set(HEAVY)


def test_the_cli_shell_imports_no_heavy_library():
    assert loaded_after("import backtest.cli") == set()


def test_a_run_without_report_loads_no_plotting_or_query_library():
    """What `dhlp run --no-report` loads before the kernel runs: the runner, with the results
    modules it writes through, and the default strategy's inputs read and checked."""
    loaded = loaded_after("import backtest.runner\nplan = backtest.runner.prepare()")
    assert loaded.isdisjoint({"matplotlib", "duckdb", "jinja2"}), loaded


@pytest.mark.parametrize("module", ["backtest.sweep", "backtest.regress"])
def test_sweep_and_regress_workers_load_no_plotting_or_query_library(module):
    """Their spawned workers import these modules to run a point or a strategy."""
    loaded = loaded_after(f"import {module}")
    assert loaded.isdisjoint({"matplotlib", "duckdb", "jinja2"}), loaded


@pytest.mark.e2e
def test_dhlp_run_no_report_loads_no_plotting_or_query_library(tmp_path):
    """The whole command, kernel and run folder included (a short window of the default)."""
    argv = ["dhlp", "run", "--out", str(tmp_path), "--no-report", "--set", 'data.end="2022-07-08"']
    loaded = loaded_after(
        f"from backtest.cli import main\nsys.argv = {argv!r}\n"
        "try:\n    main()\nexcept SystemExit as end:\n    assert not end.code, end.code"
    )
    assert loaded.isdisjoint({"matplotlib", "duckdb", "jinja2"}), loaded
    assert len(list(tmp_path.glob("*/steps.parquet"))) == 1


def test_simulate_help_still_lists_every_model_parameter():
    """The epilog is built when the help is shown, from the simulators' parameter models."""
    from backtest.cli import app
    from backtest.inputs.simulate import MODELS

    result = CliRunner().invoke(app, ["data", "simulate", "--help"])
    assert result.exit_code == 0, result.output
    shown = " ".join(result.output.split())  # as words: the help is wrapped to the terminal
    for name, cls in MODELS.items():
        assert f"{name}: {(cls.__doc__ or '').splitlines()[0]}" in shown
        for key, field in cls.model_fields.items():
            assert f"{key} = {field.default!r}: {field.description}" in shown
