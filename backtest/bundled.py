"""The bundled data and strategy library, wherever dhlp is installed.

A wheel (or `pip install .`) carries them inside the package, at backtest/_bundled/data and
backtest/_bundled/strategies (pyproject.toml maps the repository's data/ and strategies/ there);
in a clone, editable or not installed, they are the repository's own data/ and strategies/. A
strategy's relative data paths resolve beside its folder in both cases.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def folder(name: str) -> Path:
    """The bundled folder `name` ("data" or "strategies")."""
    packaged = Path(str(files("backtest"))) / "_bundled" / name
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[1] / name


def strategies() -> Path:
    return folder("strategies")


def data_file(path: str | Path) -> Path:
    """`path` as given if it exists or is absolute; else the bundled file of that relative name
    if there is one ("data/eth_1h.parquet"), so bundled names work outside the repository too."""
    given = Path(path)
    if given.exists() or given.is_absolute():
        return given
    packaged = folder("data").parent / given
    return packaged if packaged.exists() else given


def question(strategy_file: Path) -> str:
    """The question a strategy file asks: in its top comment, from `Question:` to the first
    question mark ('' if it asks none)."""
    lines = strategy_file.read_text().splitlines()
    text = " ".join(line.lstrip("#").strip() for line in lines if line.startswith("#"))
    if "Question:" not in text:
        return ""
    asked = text.split("Question:", 1)[1]
    return asked[: asked.index("?") + 1].strip() if "?" in asked else asked.strip()
