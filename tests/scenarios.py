"""Small generated markets, flows and strategies for the engine tests."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from backtest.inputs.flow import FLOW_SCHEMA

START = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)


def market_frame(
    n_ticks: int = 48,
    seed: int = 0,
    spot0: float = 2000.0,
    vol: float = 0.8,
    iv: float = 0.7,
    step_hours: float = 1.0,
    uneven: bool = False,
    funding: float | None = None,
) -> pl.DataFrame:
    """GBM spot with a random-walk IV, hourly (or unevenly spaced) ticks from START."""
    rng = np.random.default_rng(seed)
    steps = np.full(n_ticks - 1, step_hours)
    if uneven:
        steps = steps * rng.choice(
            [0.25, 1.0, 3.0, 23.0], size=n_ticks - 1, p=[0.2, 0.6, 0.15, 0.05]
        )
    hours = np.concatenate([[0.0], np.cumsum(steps)])
    dt_years = steps / (365 * 24)
    log_s = np.cumsum(
        -0.5 * vol**2 * dt_years + vol * np.sqrt(dt_years) * rng.standard_normal(n_ticks - 1)
    )
    frame = pl.DataFrame(
        {
            "ts": [START + dt.timedelta(hours=float(h)) for h in hours],
            "spot": spot0 * np.exp(np.concatenate([[0.0], log_s])),
            "iv": iv * np.exp(np.concatenate([[0.0], np.cumsum(rng.normal(0, 0.03, n_ticks - 1))])),
        }
    ).with_columns(pl.col("ts").dt.cast_time_unit("us"))
    if funding is not None:
        frame = frame.with_columns(funding=pl.lit(funding))
    return frame


def flow_frame(
    market: pl.DataFrame,
    n_trades: int = 30,
    seed: int = 1,
    max_tenor_hours: float = 96.0,
    sides: tuple[int, ...] = (1, -1),
    expire_inside: bool = False,
) -> pl.DataFrame:
    """Random trades on listed strikes around spot; `expire_inside` keeps every expiry before the
    last tick so the whole book settles within the run."""
    rng = np.random.default_rng(seed)
    ts = market["ts"]
    first, last = ts[0], ts[-1]
    span = (last - first).total_seconds()
    rows = []
    for _ in range(n_trades):
        at = first + dt.timedelta(
            seconds=float(rng.uniform(0, span * (0.6 if expire_inside else 1.0)))
        )
        room = (last - at).total_seconds() / 3600 if expire_inside else max_tenor_hours
        tenor = float(rng.uniform(0.5, max(min(max_tenor_hours, room) - 0.01, 0.6)))
        spot_at = float(market.filter(pl.col("ts") <= at)["spot"][-1])
        rows.append(
            {
                "ts": at,
                "expiry": at + dt.timedelta(hours=tenor),
                "strike": float(round(spot_at * np.exp(rng.normal(0, 0.05)) / 25) * 25),
                "kind": str(rng.choice(["C", "P"])),
                "side": int(rng.choice(sides)),
                "size": float(rng.lognormal(1.0, 0.8)),
            }
        )
    return pl.DataFrame(rows, schema=FLOW_SCHEMA).sort("ts")


def no_fees(**sections: dict) -> dict:
    """A strategy dict with every fee and cost off, then `sections` merged in."""
    base = {
        "pool": {"initial_capital": 1_000_000.0, "max_utilisation": 0.8},
        "pricing": {"base_fee": 0.0, "spot_fee": 0.0},
        "slippage": {"model": "none"},
    }
    for name, values in sections.items():
        base[name] = base.get(name, {}) | values
    return base
