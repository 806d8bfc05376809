"""Throughput of this machine on generated data (what `dhlp bench` prints; never a test)."""

from __future__ import annotations

import os
import platform
import time

import numpy as np
import polars as pl

from backtest.config import Strategy
from backtest.inputs.market import Market
from backtest.plan import Plan
from backtest.pricing import greeks_throughput
from backtest.runner import ENGINE_VERSION, simulate

MINUTE_NS = 60 * 1_000_000_000


def gbm_market(n_ticks: int, seed: int = 0, spot0: float = 2000.0, vol: float = 0.7) -> Market:
    """1-minute GBM ticks starting 2024-01-01 with a gently moving IV around `vol`."""
    rng = np.random.default_rng(seed)
    dt = 1.0 / (365 * 1440)
    shocks = rng.standard_normal(n_ticks - 1)
    log_s = np.concatenate([[0.0], np.cumsum(-0.5 * vol**2 * dt + vol * np.sqrt(dt) * shocks)])
    iv = vol * np.exp(np.cumsum(rng.normal(0.0, 0.002, n_ticks)) * 0.1)
    ts = np.datetime64("2024-01-01", "ns").astype(np.int64) + MINUTE_NS * np.arange(n_ticks)
    zeros = np.zeros(n_ticks)
    return Market(
        ts=ts.astype(np.int64),
        spot=spot0 * np.exp(log_s),
        iv=iv,
        rate=zeros,
        funding=zeros,
        path_ids=np.array([0], np.int64),
        offsets=np.array([0, n_ticks], np.int64),
    )


def board_strategy(n_ticks: int, n_trades: int) -> Strategy:
    """A listed board of weekly expiries out to 4 weeks: about 100 live series."""
    days = n_ticks / 1440
    return Strategy.model_validate(
        {
            "name": "bench",
            "flow": {
                "trades_per_day": n_trades / days,
                "iv_intensity": 0.0,
                "expiries": ["weekly"],
                "max_tenor_days": 28,
                "strike_step": 100.0,
                "moneyness_sd": 0.06,
                "buy_fraction": 0.55,
            },
            "pool": {"initial_capital": 1e9, "max_utilisation": 1.0},
            "hedge": {"policy": "threshold", "threshold": 0.001},
        }
    )


def measure(n_ticks: int, n_trades: int) -> dict:
    strategy = board_strategy(n_ticks, n_trades)
    market = gbm_market(n_ticks)
    prep = Plan(strategy, market).whole()
    simulate(prep)  # compile or load from cache
    t0 = time.perf_counter()
    out = simulate(prep)
    seconds = time.perf_counter() - t0
    series_ticks = int(out.records.steps["n_live_series"].sum())
    return {
        "engine_version": ENGINE_VERSION,
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.processor() or 'cpu'}",
        "ticks": n_ticks,
        "trades": int(pl.Series(out.records.trades["filled"]).gt(0).sum()),
        "mean_live_series": series_ticks / n_ticks,
        "seconds": seconds,
        "ticks_per_s": n_ticks / seconds,
        "series_ticks_per_s": series_ticks / seconds,
        "greeks_per_s": greeks_throughput(),
    }
