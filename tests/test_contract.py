"""docs/design.md and docs/strategy.toml are the contract users read: they must name every
strategy key and every column the engine writes."""

from __future__ import annotations

import re
from pathlib import Path

from scenarios import hourly_flow, hourly_lp, hourly_market

from backtest.config import Strategy, load_strategy
from backtest.runner import simulate_frames

DOCS = Path(__file__).resolve().parents[1] / "docs"
SECTIONS = [
    name for name, field in Strategy.model_fields.items() if name not in ("name", "description")
]


def keys_of(section: str) -> list[str]:
    return list(Strategy.model_fields[section].annotation.model_fields)


def test_the_example_strategy_sets_every_key_and_loads():
    text = (DOCS / "strategy.toml").read_text()
    load_strategy(DOCS / "strategy.toml")
    for section in SECTIONS:
        block = text.split(f"[{section}]", 1)[1].split("\n[", 1)[0]
        for key in keys_of(section):
            assert re.search(rf"^#?\s*{key}\s*=", block, re.M), f"[{section}] {key}"


def test_the_design_names_every_key_and_column():
    design = (DOCS / "design.md").read_text()
    for section in SECTIONS:
        for key in keys_of(section):
            assert key in design, f"[{section}] {key}"
    tables, summary = simulate_frames(
        {"hedge": {"policy": "every_trade"}},
        hourly_market([2000, 2100, 1900]),
        hourly_flow((0, 48, 2000, "C", 1, 10)),
        lp_flows=hourly_lp((1, -1e5)),
    )
    for name in ("steps", "trades", "hedges", "series", "liquidations", "lp"):
        for column in getattr(tables, name).columns:
            if not column.startswith("pnl_"):  # the pnl_* family is named as a family
                assert column in design, f"{name}.{column}"
