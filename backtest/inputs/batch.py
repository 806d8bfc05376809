"""What the kernel and the results layer need for some of a run's paths.

A batch quacks like the whole run for the results layer (strategy, run_id, market, ...); it lives
here, below both the plan that builds it and the results that read it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from backtest.config import Strategy
from backtest.inputs.flow import AlignedFlow
from backtest.inputs.market import Market
from backtest.inputs.surface import Surface
from backtest.kernel.types import ListedOptions, Params


@dataclass
class Batch:
    """What the kernel and the results layer need for some of a plan's paths."""

    strategy: Strategy
    params: Params
    run_id: str
    surface: Surface
    market: Market
    flow: pl.DataFrame
    aligned: AlignedFlow
    lp_flows: tuple[np.ndarray, np.ndarray]  # (tick per path and row, amount)
    listed: ListedOptions  # what a vega hedge may trade; its series follow the flow's
    oracle: np.ndarray  # the oracle's price per tick (empty without an oracle)
    delays: np.ndarray  # a hedge's random delay in ticks, per tick (empty without one)
    utilisation: np.ndarray  # the money market's borrow demand per tick (empty: lending off)
    utilisation_pin: np.ndarray  # a squeeze's pinned utilisation per tick (NaN: none)
