"""What each entry point imports: `dhlp --help` and every command load only the CLI shell, and
a run loads the plotting and query libraries only when it writes a report or queries runs."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

HEAVY = ("matplotlib", "duckdb", "jinja2", "numba", "polars", "pyarrow")


def loaded_after(statement: str) -> set[str]:
    """Top-level packages of HEAVY that `statement` imports, run in a fresh interpreter."""
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return {name.split(".")[0] for name in json.loads(done.stdout)} & set(HEAVY)


def test_the_cli_shell_imports_no_heavy_library():
    assert loaded_after("import backtest.cli") == set()


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
