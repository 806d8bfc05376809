"""Small generated markets, flows and strategies for the engine tests."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from backtest.inputs.flow import FLOW_SCHEMA
from backtest.kernel.types import PNL_COMPONENTS

REPO = Path(__file__).resolve().parents[1]  # the clone the tests run in
START = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)
UTC_US = pl.Datetime("us", "UTC")


TOL = 1e-9  # money, relative to the pool's size: the one tolerance of the ledger's checks


def assert_reconciles(tables, summary: pl.DataFrame) -> None:
    """The ledger holds on every tick of every path: the components sum to pnl_total, and NAV
    moves by pnl_total + lp_flow (the summary's reconcile_max_abs), to TOL of the pool's size;
    hedge costs and liquidation penalties are never income."""
    steps = tables.steps
    parts = steps.select(pl.sum_horizontal(*PNL_COMPONENTS)).to_series().to_numpy()
    scale = max(float(summary["initial_nav"].max()), float(steps["nav"].abs().max()))
    assert np.allclose(parts, steps["pnl_total"].to_numpy(), rtol=0, atol=TOL * scale)
    assert float(summary["reconcile_max_abs"].max()) <= TOL * scale
    assert (steps["pnl_hedge_cost"] <= 0).all() and (steps["pnl_liquidation"] <= 0).all()


def hourly_market(
    spots,
    iv=0.6,
    *,
    hours=None,
    funding=None,
    path_id: int | None = None,
) -> pl.DataFrame:
    """Ticks at T0 + hours (default 0, 1, 2, ...), flat or per-tick iv and funding."""
    n = len(spots)
    hours = list(range(n)) if hours is None else list(hours)
    data: dict[str, Any] = {
        "ts": [T0 + h * HOUR for h in hours],
        "spot": [float(s) for s in spots],
        "iv": np.broadcast_to(np.asarray(iv, float), (n,)).tolist(),
    }
    if funding is not None:
        data["funding"] = np.broadcast_to(np.asarray(funding, float), (n,)).tolist()
    if path_id is not None:
        data["path_id"] = [path_id] * n
    return pl.DataFrame(data).with_columns(pl.col("ts").cast(UTC_US))


def hourly_flow(*rows) -> pl.DataFrame:
    """Rows (hour, expiry_hour, strike, kind, side, size[, path_id]) from T0; no rows, no flow."""
    with_path = any(len(r) == 7 for r in rows)
    data: dict[str, list] = {k: [] for k in FLOW_SCHEMA}
    if with_path:
        data["path_id"] = []
    for r in rows:
        hour, expiry, strike, kind, side, size = r[:6]
        data["ts"].append(T0 + hour * HOUR)
        data["expiry"].append(T0 + expiry * HOUR)
        data["strike"].append(float(strike))
        data["kind"].append(kind)
        data["side"].append(side)
        data["size"].append(float(size))
        if with_path:
            data["path_id"].append(r[6] if len(r) == 7 else None)
    schema = dict(FLOW_SCHEMA) | ({"path_id": pl.Int64} if with_path else {})
    return pl.DataFrame(data, schema=schema)


def hourly_lp(*rows) -> pl.DataFrame:
    """LP rows (hour, amount) from T0: + deposit, - withdrawal request."""
    return pl.DataFrame(
        {"ts": [T0 + h * HOUR for h, _ in rows], "amount": [float(a) for _, a in rows]},
        schema={"ts": UTC_US, "amount": pl.Float64},
    )


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


@dataclass
class Scenario:
    """A random pool on a random market: everything the engine can do, switched on often."""

    seed: int
    strategy: dict
    market: pl.DataFrame
    flow: pl.DataFrame
    lp: pl.DataFrame | None

    @property
    def capital(self) -> float:
        return self.strategy["pool"]["initial_capital"]


def _pick(rng: np.random.Generator, *options):
    return options[int(rng.integers(len(options)))]


def random_market(rng: np.random.Generator, n_ticks: int, n_paths: int) -> pl.DataFrame:
    """GBM spot with a random-walk IV, a spot jump and an IV spike on some paths, uneven spacing
    and funding on some markets."""
    uneven = rng.random() < 0.3
    frames = []
    clock = None  # every path on the first path's ticks
    for path in range(n_paths):
        frame = market_frame(n_ticks, seed=int(rng.integers(1 << 30)), uneven=uneven, funding=0.1)
        clock = frame["ts"] if clock is None else clock
        frame = frame.with_columns(ts=clock)
        spot, iv = frame["spot"].to_numpy().copy(), frame["iv"].to_numpy().copy()
        if rng.random() < 0.7:  # a crash or a squeeze: what breaks collateral
            at = int(rng.integers(1, n_ticks))
            spot[at:] *= _pick(rng, 0.6, 0.75, 1.25, 1.5, 1.8, 2.5)
        if rng.random() < 0.4:  # a vol spike: what trips the breakers
            at = int(rng.integers(1, n_ticks))
            iv[at:] *= _pick(rng, 1.3, 1.6)
        frame = frame.with_columns(spot=pl.Series(spot), iv=pl.Series(iv))
        frames.append(frame.with_columns(path_id=pl.lit(path, pl.Int64)) if n_paths > 1 else frame)
    return pl.concat(frames)


def random_lp(rng: np.random.Generator, market: pl.DataFrame, capital: float) -> pl.DataFrame:
    """Deposits and withdrawal requests at random times, some larger than the pool."""
    first, last = market["ts"].min(), market["ts"].max()
    n = int(rng.integers(1, 5))
    times = sorted(first + (last - first) * float(u) for u in rng.uniform(0, 1, n))
    amounts = [capital * float(_pick(rng, -2.0, -0.4, -0.1, 0.2, 0.5)) for _ in range(n)]
    return pl.DataFrame(
        {"ts": times, "amount": amounts}, schema={"ts": UTC_US, "amount": pl.Float64}
    )


def random_scenario(seed: int, *, expire_inside: bool = False) -> Scenario:
    rng = np.random.default_rng(seed)
    full = rng.random() < 0.5
    capital = float(_pick(rng, 2e5, 1e6))
    if full:
        util = float(_pick(rng, 0.5, 0.8, 1.0))
        pool = {"collateral": "full", "max_utilisation": util}
    else:
        util = float(_pick(rng, 0.5, 1.0, 2.0, 3.0))
        pool = {
            "collateral": "dynamic",
            "max_utilisation": util,
            "liquidation_threshold": util * float(_pick(rng, 1.05, 1.3)),
            "stress_spot": float(_pick(rng, 0.1, 0.3)),
            "max_leverage": float(_pick(rng, float("inf"), 1.5, 3.0)),
            "borrow_rate": float(_pick(rng, 0.0, 0.1)),
        }
    pool |= {
        "initial_capital": capital,
        "liquidation_penalty": float(_pick(rng, 0.0, 0.02, 0.05)),
        "idle_yield": float(_pick(rng, 0.0, 0.05)),
    }
    impact = rng.random() < 0.4
    strategy = {
        "pool": pool,
        "pricing": {
            "base_fee": float(_pick(rng, 0.0, 0.01, 0.05)),
            "spot_fee": float(_pick(rng, 0.0, 0.0005)),
            "vega_fee": float(_pick(rng, 0.0, 0.5)),
            "min_fee": float(_pick(rng, 0.0, 1.0)),
            "skew_slope": float(_pick(rng, 0.0, -0.3)),
            "smile_curvature": float(_pick(rng, 0.0, 0.5)),
            "rate": float(_pick(rng, 0.0, 0.04)),
            "iv_impact": 0.02 if impact else 0.0,
            "skew_impact": 0.01 if impact and rng.random() < 0.5 else 0.0,
            "standard_size": float(_pick(rng, 5.0, 50.0)),
            "impact_half_life": float(_pick(rng, 1.0, 24.0)),
            "cb_iv_move": float(_pick(rng, 0.0, 0.05, 0.1)),
            "cb_min_free": float(_pick(rng, 0.0, 0.0, 0.3)),
            "cb_hours": float(_pick(rng, 1.0, 2.0, 6.0)),
        },
        "hedge": {
            "policy": str(
                _pick(rng, "none", "every_trade", "threshold", "periodic", "whalley_wilmott")
            ),
            "threshold": float(_pick(rng, 0.0, 0.01, 0.05)),
            "interval": str(_pick(rng, "1h", "4h")),
            "rebalance_to": str(_pick(rng, "zero", "edge")),
            "instrument": str(_pick(rng, "spot", "perp")),
            "latency": int(_pick(rng, 0, 0, 2)),
            "hedge_cap": float(_pick(rng, float("inf"), float("inf"), 50.0)),
            "borrow_fee": float(_pick(rng, 0.0, 0.05)),
        },
        "lp": {
            "run_drawdown": float(_pick(rng, 0.0, 0.002, 0.01)),
            "run_fraction": float(_pick(rng, 0.1, 0.5)),
            "withdrawal_delay": float(_pick(rng, 0.0, 2.0)),
            "withdrawal_fee": float(_pick(rng, 0.0, 0.01)),
        },
        "slippage": {
            "model": str(_pick(rng, "none", "fixed_bps", "sqrt_impact", "cpmm")),
            "liquidity_usd": float(_pick(rng, 2e5, 5e7)),
            "gas_usd": float(_pick(rng, 0.0, 5.0)),
            "mev_bps": float(_pick(rng, 0.0, 3.0)),
            "mev_min_notional": float(_pick(rng, 0.0, 1e5)),
        },
    }
    n_ticks = int(rng.integers(8, 48))
    n_paths = 1 if rng.random() < 0.7 else int(rng.integers(2, 4))
    market = random_market(rng, n_ticks, n_paths)
    # Size the flow to the pool, so collateral binds: each trade a share of what it can write.
    n_trades = int(rng.integers(3, 30))
    flow = flow_frame(
        market.filter(pl.col("path_id") == 0) if n_paths > 1 else market,
        n_trades,
        seed=int(rng.integers(1 << 30)),
        expire_inside=expire_inside,
    )
    scale = capital * util / 2000.0 / n_trades * float(_pick(rng, 0.5, 2.0, 6.0, 20.0))
    flow = flow.with_columns(size=pl.col("size") / pl.col("size").mean() * scale)
    lp = random_lp(rng, market, capital) if rng.random() < 0.5 else None
    # Drawn last, so the draws above (and the hit rates they were tuned to) stay as they were.
    strategy["flow"] = {
        "elasticity": float(_pick(rng, 0.0, 0.0, 0.0, 0.1, 1.0)),
        "reference_spread_vol": float(_pick(rng, 0.0, 0.01, 0.05)),
    }
    if rng.random() < 0.4:  # the flow sized to the pool: its nominal volume, as a share of NAV
        days = (market["ts"].max() - market["ts"].min()).total_seconds() / 86_400
        per_day, spot = n_trades / days, float(market["spot"][0])
        strategy["flow"] |= {
            "trades_per_day": per_day,
            "size_median": scale,
            "size_sigma": 0.0,
            "notional_per_nav": per_day * scale * spot / capital * float(_pick(rng, 0.5, 2.0)),
        }
    if rng.random() < 0.4:  # yield-chasing LPs: a window short enough to fill inside the run
        strategy["lp"] |= {
            "benchmark_apy": float(_pick(rng, -0.5, 0.05, 5.0)),
            "deposit_elasticity": float(_pick(rng, 0.0, 1.0, 50.0)),
            "withdrawal_elasticity": float(_pick(rng, 0.0, 1.0, 50.0)),
            "yield_window_days": float(_pick(rng, 1.0, 1.5)),
        }
    if rng.random() < 0.4:  # vega hedged with listed options, some of them expiring inside
        strategy["vega_hedge"] = {
            "policy": str(_pick(rng, "band", "tenor_matched")),
            "band": float(_pick(rng, 1e-6, 1e-5, 1e-4)),
            "expiries": list(_pick(rng, ["daily"], ["weekly", "monthly"])),
            "min_tenor_days": float(_pick(rng, 0.0, 7.0)),
            "spread_vol": float(_pick(rng, 0.0, 0.01)),
        }
    if rng.random() < 0.3:
        strategy["pricing"]["max_vega"] = float(_pick(rng, 1e-5, 1e-4))
    if rng.random() < 0.3:  # more cpmm venues, deep enough to leave a sandwich room
        strategy["slippage"] |= {"model": "cpmm", "liquidity_usd": float(_pick(rng, 5e6, 5e7))}
    if strategy["slippage"]["model"] == "cpmm":  # a venue that remembers; sandwiches
        strategy["slippage"]["arb_half_life"] = float(_pick(rng, 0.0, 0.5, 4.0, float("inf")))
        if rng.random() < 0.6:
            strategy["slippage"]["mev_bps"] = 0.0
            strategy["mev"] = {
                "model": "sandwich",
                "submission": str(_pick(rng, "public", "public", "private")),
                "private_fee_bps": float(_pick(rng, 0.0, 2.0)),
                "max_slippage": float(_pick(rng, 0.003, 0.01, 0.05)),
                "attacker_cost_usd": float(_pick(rng, 0.0, 10.0)),
            }
    if rng.random() < 0.2:
        strategy.setdefault("mev", {})["min_hedge_usd"] = float(_pick(rng, 1e3, 2e4))
    if rng.random() < 0.25:  # hedges that fill a random number of ticks late
        strategy.setdefault("mev", {})["random_delay"] = int(_pick(rng, 1, 3))
    if rng.random() < 0.35:  # a lagging push oracle, and traders who pick it off
        strategy["oracle"] = {
            "model": "push",
            "lag": float(_pick(rng, 0.0, 1.0, 3.0)),
            "deviation": float(_pick(rng, 0.0, 0.005, 0.03)),
            "heartbeat": float(_pick(rng, 0.0, 1.0, 6.0)),
        }
        # An oracle that never prints inside the run is refused: keep lag and heartbeat short
        # against this market's span, and a heartbeat (deviation alone may never be reached).
        hours = (market["ts"].max() - market["ts"].min()).total_seconds() / 3600
        oracle = strategy["oracle"]
        oracle["lag"] = min(oracle["lag"], hours / 3)
        oracle["heartbeat"] = min(oracle["heartbeat"] or hours / 4, hours / 4)
        strategy["flow"] |= {
            "stale_fraction": float(_pick(rng, 0.0, 0.1, 0.3)),
            "stale_edge": float(_pick(rng, 0.0, 0.002, 0.01)),
        }
    if rng.random() < 0.3:
        # Traders sell the pool every put: a book long puts, hedged with long units beyond its
        # short calls (units that cover nothing), the book two subtle bugs hid in.
        flow = flow.with_columns(
            side=pl.when(pl.col("kind") == "P").then(-1).otherwise(pl.col("side")).cast(pl.Int8)
        )
    return Scenario(seed, strategy, market, flow, lp)


def make_run(root: Path, n_paths: int = 1, seed: int = 0, **sections: dict) -> Path:
    """A small run folder under root/runs: 4 days of hourly ticks, 40 trades, hedged."""
    from backtest.config import build_strategy
    from backtest.runner import run

    data = root / f"data-{n_paths}-{seed}"
    data.mkdir(parents=True, exist_ok=True)
    paths = [
        market_frame(96, seed=seed + k).with_columns(path_id=pl.lit(k)) for k in range(n_paths)
    ]
    market = pl.concat(paths) if n_paths > 1 else paths[0].drop("path_id")
    market.write_parquet(data / "market.parquet")
    flow_frame(paths[0], n_trades=40, seed=seed).write_parquet(data / "flow.parquet")
    config = {
        "name": "small",
        "description": "A small test pool <with markup> & hedging",
        "pool": {"initial_capital": 300_000.0},
        "hedge": {"policy": "threshold", "threshold": 0.01},
    } | sections
    result = run(
        build_strategy(config, "test"),
        market=data / "market.parquet",
        flow=data / "flow.parquet",
        out=root / "runs",
    )
    return result.path
