"""Summary metrics against values worked out by hand on short, fixed NAV series and tables."""

from __future__ import annotations

import datetime as dt
import json
import math
import statistics

import numpy as np
import polars as pl
import pytest
from scenarios import flow_frame, market_frame

from backtest.config import build_strategy
from backtest.kernel.types import PNL_COMPONENTS, SERIES_COMPONENTS
from backtest.plan import Plan
from backtest.results.summary import COLUMNS, REASONS, distribution, summary_frame, tail_risk
from backtest.runner import prepare, run, run_batches, simulate_frames

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)
UTC_NS = pl.Datetime("ns", "UTC")
ORIGINAL_KEYS = [
    "run_id",
    "strategy",
    "path_id",
    "n_paths",
    "start",
    "end",
    "n_ticks",
    "initial_nav",
    "final_nav",
    "pnl_total",
    "lp_flow",
    "lp_return",
    "apy",
    "sharpe",
    "max_drawdown",
    "n_trades",
    "n_partial",
    "n_rejected",
    "volume",
    "n_hedges",
    "hedge_volume",
    "hedge_notional",
    "hedge_cost_over_fees",
    "max_utilisation",
    "mean_utilisation",
    "insolvent",
    "insolvency_ts",
    "bad_debt",
    "residual_share",
    "reconcile_max_abs",
]


def steps_frame(nav, hours, initial=None, **columns) -> pl.DataFrame:
    """One path of steps: NAV at T0 + hours, every move booked as theta unless columns say so;
    no LP flows, so one share per unit of initial NAV throughout."""
    nav = np.asarray(nav, dtype=float)
    initial = nav[0] if initial is None else initial
    moves = np.diff(nav, prepend=initial)
    frame = pl.DataFrame(
        {
            "path_id": np.zeros(len(nav), np.int64),
            "ts": pl.Series([T0 + dt.timedelta(hours=h) for h in hours]).cast(UTC_NS),
            "nav": nav,
            "shares": np.full(len(nav), initial),
            "nav_per_share": nav / initial,
            "utilisation": np.zeros(len(nav)),
            "free_cash": nav,
            "leverage": np.ones(len(nav)),
            "collateral_gap": np.zeros(len(nav)),
            "insolvent": np.zeros(len(nav), bool),
            **{c: np.zeros(len(nav)) for c in PNL_COMPONENTS},
            "pnl_theta": moves,
            "pnl_total": moves,
            "lp_flow": np.zeros(len(nav)),
            **{
                c: np.zeros(len(nav))
                for c in ("lent", "lent_locked", "lending_yield", "lending_borrow_interest")
            },
            "recall_blocked": np.zeros(len(nav), bool),
        }
    )
    return frame.with_columns(**{k: pl.Series(v) for k, v in columns.items()})


NO_TRADES = pl.DataFrame(
    schema={
        "path_id": pl.Int64,
        "filled": pl.Float64,
        "size": pl.Float64,
        "reject_reason": pl.String,
        "vega": pl.Float64,
        "fee_vega": pl.Float64,
        "informed": pl.Boolean,
        "pnl_held_to_expiry": pl.Float64,
        "spot": pl.Float64,
        "fee_forgone": pl.Float64,
        "stale": pl.Boolean,
        "oracle_gap": pl.Float64,
        "fee": pl.Float64,
        "impact": pl.Float64,
    }
)
NO_HEDGES = pl.DataFrame(
    schema={
        "path_id": pl.Int64,
        "qty": pl.Float64,
        "spot": pl.Float64,
        "slippage_cost": pl.Float64,
        "gas_cost": pl.Float64,
        "mev_cost": pl.Float64,
        "instrument": pl.String,
        "vega": pl.Float64,
        "fee": pl.Float64,
        "sandwiched": pl.Boolean,
        "attacker_pnl": pl.Float64,
        "ts": UTC_NS,
        "reason": pl.String,
        "unfilled": pl.Float64,
    }
)


NO_CLOSES = pl.DataFrame(
    schema={"path_id": pl.Int64, "qty": pl.Float64, "penalty": pl.Float64, "reason": pl.String}
)
NO_LP = pl.DataFrame(
    schema={
        "path_id": pl.Int64,
        "event": pl.String,
        "amount": pl.Float64,
        "unwind_cost": pl.Float64,
        "fee": pl.Float64,
        "waited": pl.Boolean,
    }
)


NO_SERIES = pl.DataFrame(
    schema={"path_id": pl.Int64, "listed": pl.Boolean}
    | {name: pl.Float64 for name in SERIES_COMPONENTS}
)


def summarise_one(steps, trades=NO_TRADES, hedges=NO_HEDGES, initial=None) -> dict:
    initial = float(steps["nav"][0]) if initial is None else initial
    frame = summary_frame(
        steps,
        trades,
        hedges,
        NO_CLOSES,
        NO_LP,
        NO_SERIES,
        initial=initial,
        run_id="r",
        strategy="s",
        n_paths=1,
    )
    assert frame.columns == list(COLUMNS)
    (row,) = frame.to_dicts()
    return row


def day(n: float) -> dt.datetime:
    return T0 + dt.timedelta(days=n)


def test_drawdown_depth_dates_and_time_under_water():
    # Daily NAV. Peaks 110 (day 1) and 121 (day 4); the deepest fall is 110 -> 99 (10 %), back
    # above 110 on day 4 (3 days under water); after 121 NAV never recovers: 4 days to day 8.
    nav = [100, 110, 99, 104, 121, 120, 115, 118, 119]
    row = summarise_one(steps_frame(nav, hours=[24 * d for d in range(9)]))
    assert row["max_drawdown"] == pytest.approx(0.1)
    assert row["max_drawdown_peak"] == day(1)
    assert row["max_drawdown_trough"] == day(2)
    assert row["max_drawdown_recovery"] == day(4)
    assert row["longest_underwater_days"] == pytest.approx(4.0)


def test_equal_high_counts_as_recovery_and_no_drawdown_has_no_dates():
    row = summarise_one(steps_frame([100, 90, 100, 95], hours=[0, 12, 36, 48]))
    assert row["max_drawdown"] == pytest.approx(0.1)
    assert (row["max_drawdown_peak"], row["max_drawdown_recovery"]) == (day(0), day(1.5))
    assert row["longest_underwater_days"] == pytest.approx(1.5)
    rising = summarise_one(steps_frame([100, 101, 102], hours=[0, 1, 2]))
    assert rising["max_drawdown"] == 0.0 and rising["longest_underwater_days"] == 0.0
    assert rising["max_drawdown_peak"] is None and rising["max_drawdown_trough"] is None


def test_sharpe_and_volatility_use_the_last_nav_of_each_utc_day():
    # Two ticks a day; the 12:00 values must not count. Daily closes 100, 102, 100.98, 103.0
    hours, nav = [], []
    for d, (noon, close) in enumerate([(90, 100), (500, 102), (1, 100.98), (7, 103.0)]):
        hours += [24 * d + 12, 24 * d + 23]
        nav += [noon, close]
    row = summarise_one(steps_frame(nav, hours), initial=100.0)
    returns = [102 / 100 - 1, 100.98 / 102 - 1, 103.0 / 100.98 - 1]  # 2 %, -1 %, 2 %
    mean, sd = statistics.mean(returns), statistics.stdev(returns)
    assert row["sharpe"] == pytest.approx(mean / sd * math.sqrt(365))
    assert row["volatility"] == pytest.approx(sd * math.sqrt(365))


def test_apy_and_return_over_two_years():
    row = summarise_one(steps_frame([100.0, 121.0], hours=[0, 2 * 365 * 24]), initial=100.0)
    assert row["lp_return"] == pytest.approx(0.21)
    assert row["apy"] == pytest.approx(0.10)
    assert row["sharpe"] is None and row["volatility"] is None  # two days of data


def test_lp_deposits_and_withdrawals_are_not_returns():
    # +10 % on 100; a 110 deposit buys 100 shares at 1.10; -5 % on 220; then everyone leaves.
    nav = [100.0, 110.0, 220.0, 209.0, 0.0]
    moves = [0.0, 10.0, 0.0, -11.0, 0.0]
    steps = steps_frame(
        nav,
        hours=[0, 1, 2, 3, 4],
        initial=100.0,
        shares=[100.0, 100.0, 200.0, 200.0, 0.0],
        nav_per_share=[1.0, 1.1, 1.1, 1.045, 0.0],
        lp_flow=[0.0, 0.0, 110.0, 0.0, -209.0],
        pnl_theta=moves,
        pnl_total=moves,
    )
    row = summarise_one(steps, initial=100.0)
    assert row["lp_return"] == pytest.approx(0.045)  # NAV / initial would say -100 %
    assert row["max_drawdown"] == pytest.approx(0.05)
    # the peak is the last tick at the high (1.10 at 01:00 and again at 02:00)
    assert (row["max_drawdown_peak"], row["max_drawdown_trough"]) == (T0 + 2 * HOUR, T0 + 3 * HOUR)
    assert row["lp_flow"] == pytest.approx(-99.0) and row["reconcile_max_abs"] < 1e-12


def test_gamma_theta_ratio_trade_reasons_and_hedge_costs():
    steps = steps_frame(
        [100.0, 130.0, 140.0],
        hours=[0, 1, 2],
        pnl_theta=[0.0, 100.0, 0.0],
        pnl_gamma=[0.0, -60.0, 0.0],
        pnl_fees=[0.0, -10.0, 20.0],
        pnl_total=[0.0, 30.0, 20.0],
    )
    trades = pl.DataFrame(
        {
            "path_id": [0] * 7,
            "size": [1.0, 2.0, 4.0, 3.0, 5.0, 5.0, 2.0],
            "filled": [1.0, 2.0, 1.0, 0.0, 0.0, 0.0, 0.0],
            "reject_reason": [
                *("", "", "utilisation", "utilisation", "utilisation", "insolvent", "price")
            ],
            "vega": [10.0, -20.0, 5.0, 5.0, 5.0, 5.0, 5.0],
            "fee_vega": [0.5, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0],
            "informed": [True, False, False, False, False, True, False],
            "pnl_held_to_expiry": [-7.0, 3.0, float("nan"), 0.0, 0.0, 0.0, 0.0],
            "spot": [100.0] * 6 + [150.0],
            "fee_forgone": [0.0] * 6 + [0.7],
            # the second fill is a stale-quote trader's: 3.0 over the market, a fee of 0.25
            # and 0.5 of impact paid for his own fill
            "stale": [False, True, False, False, False, False, False],
            "oracle_gap": [0.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            "fee": [0.5, 0.25, 1.0, 0.0, 0.0, 0.0, 0.0],
            "impact": [0.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0],
        }
    )
    hedges = pl.DataFrame(  # three trades in the underlying, one listed option (a vega hedge)
        {
            "path_id": [0, 0, 0, 0],
            "qty": [2.0, -3.0, -7.0, 0.0],
            "spot": [100.0, 200.0, 150.0, 0.0],
            "slippage_cost": [0.1, 0.3, 2.0, 0.0],
            "gas_cost": [0.05, 0.05, 0.0, 0.0],
            "mev_cost": [0.0, 0.3, 0.0, 0.0],
            "instrument": ["spot", "spot", "option", "spot"],
            "vega": [0.0, 0.0, -350.0, 0.0],
            "fee": [0.0, 0.0, 0.5, 0.0],
            "sandwiched": [False, True, False, False],  # the second's mev_cost: a sandwich
            "attacker_pnl": [0.0, 0.2, 0.0, 0.0],
            # the first was cut 1.5 units short at 00:00, open until the next tick at 01:00;
            # a withdrawal's unwind cut too (not the policy's delta left open)
            "ts": [T0, T0 + HOUR, T0 + HOUR, T0 + 2 * HOUR],
            "reason": ["threshold", "threshold", "vega_band", "withdrawal"],
            "unfilled": [-1.5, 0.0, 0.0, 4.0],
        },
        schema_overrides={"ts": UTC_NS},
    )
    row = summarise_one(steps, trades, hedges)
    assert row["gamma_theta_ratio"] == pytest.approx(0.6)
    assert (row["n_flow"], row["n_trades"], row["n_partial"], row["n_rejected"]) == (7, 3, 1, 4)
    assert row["n_rejected_utilisation"] == 2 and row["n_rejected_insolvent"] == 1
    assert row["n_partial_utilisation"] == 1 and row["n_partial_insolvent"] == 0
    assert row["fill_ratio"] == pytest.approx(4 / 22)
    # Flow lost to the reference venue: one row, 2 contracts at spot 150, a quoted fee of 0.7.
    assert row["n_rejected_price"] == 1
    assert row["notional_lost_to_reference"] == pytest.approx(300.0)
    assert row["fees_forgone"] == pytest.approx(0.7)
    assert row["volume"] == pytest.approx(4.0)
    # Notional traded: the three fills (one partial) at spot 100, the rejected rows not at all.
    assert row["notional_written"] == pytest.approx(400.0)
    assert (row["n_hedges"], row["hedge_volume"]) == (3, pytest.approx(5.0))
    assert row["hedge_notional"] == pytest.approx(800.0)
    assert row["hedge_cost"] == pytest.approx(0.8)
    assert row["hedge_slippage"] == pytest.approx(0.4) and row["hedge_mev"] == pytest.approx(0.3)
    assert row["n_sandwiched"] == 1 and row["attacker_pnl"] == pytest.approx(0.2)
    assert row["hedge_cost_bps"] == pytest.approx(10.0)
    assert (row["n_vega_hedges"], row["vega_hedged"]) == (1, pytest.approx(350.0))
    assert row["vega_hedge_cost"] == pytest.approx(2.5)
    assert row["n_stale_trades"] == 1 and row["oracle_arb_pnl"] == pytest.approx(2.25)
    assert row["unfilled_delta_days"] == pytest.approx(1.5 / 24.0)
    # Vega taken: |filled x vega| = 10 + 40 + 5, against fees of 10 in the steps.
    assert row["vega_taken"] == pytest.approx(55.0)
    assert row["fees_vega"] == pytest.approx(1.5)
    assert row["fees_per_vega"] == pytest.approx(10.0 / 55.0)
    # Held-to-expiry PnL by who traded; the NaN (expiry after the run) counts as unknown.
    assert row["n_informed"] == 1
    assert row["pnl_informed"] == pytest.approx(-7.0) and row["pnl_noise"] == pytest.approx(3.0)


def test_var_and_expected_shortfall_on_a_known_distribution():
    # 100 paths with returns -50 %, -49 %, ..., +49 %, shuffled; 3 insolvent.
    returns = (np.arange(100) - 50) / 100
    summary = pl.DataFrame(
        {
            "lp_return": np.random.default_rng(3).permutation(returns),
            "insolvent": [True] * 3 + [False] * 97,
            "max_drawdown": np.linspace(0.0, 0.2, 100),
            "bad_debt": np.zeros(100),
            "apy": np.zeros(100),
            "final_nav": np.ones(100),
        }
    )
    d = distribution(summary)
    assert d["n_paths"] == 100
    assert d["lp_return_mean"] == pytest.approx(-0.005)
    assert d["lp_return_q50"] == pytest.approx(-0.005)
    assert d["lp_return_q05"] == pytest.approx(-0.46 + 0.95 * 0.01)  # linear, position 4.95
    assert d["var_95"] == pytest.approx(0.46)  # 5th worst of 100
    assert d["es_95"] == pytest.approx(0.48)  # mean of -50 % .. -46 %
    assert d["var_99"] == pytest.approx(0.50) and d["es_99"] == pytest.approx(0.50)
    assert d["p_insolvent"] == pytest.approx(0.03)
    assert d["mean_max_drawdown"] == pytest.approx(0.1)
    assert tail_risk(np.array([0.1, -0.2, 0.3]), 0.5) == (pytest.approx(-0.1), pytest.approx(0.05))


def test_engine_summary_keeps_the_contract_and_adds_up():
    market = market_frame(72, seed=4)
    strategy = {
        "pool": {"initial_capital": 200_000.0, "max_utilisation": 0.3},
        "hedge": {"policy": "threshold", "threshold": 0.01},
    }
    _, summary = simulate_frames(strategy, market, flow_frame(market, n_trades=60, seed=2))
    row = summary.row(0, named=True)
    for key in (*ORIGINAL_KEYS, *PNL_COMPONENTS):
        assert key in row, key
    assert row["n_rejected"] == sum(row[f"n_rejected_{r}"] for r in REASONS) > 0
    assert row["hedge_cost"] == pytest.approx(-row["pnl_hedge_cost"])
    assert row["n_hedges"] > 0 and row["volatility"] > 0


def test_multi_path_summary_json_has_the_distribution(tmp_path, monkeypatch):
    """Summarised in batches of 2 paths, the run folder still speaks for all 5."""
    whole_batches = Plan.batches
    monkeypatch.setattr(Plan, "batches", lambda plan, size=2: whole_batches(plan, size))
    market = pl.concat([market_frame(48, seed=k).with_columns(path_id=pl.lit(k)) for k in range(5)])
    flow = flow_frame(market_frame(48), n_trades=20)
    market.write_parquet(tmp_path / "market.parquet")
    flow.write_parquet(tmp_path / "flow.parquet")
    strategy = build_strategy({"pool": {"initial_capital": 500_000.0}}, "test")
    result = run(
        strategy,
        market=tmp_path / "market.parquet",
        flow=tmp_path / "flow.parquet",
        out=tmp_path / "runs",
    )
    doc = json.loads((result.path / "summary.json").read_text())
    assert doc["n_paths"] == 5 and [row["n_paths"] for row in doc["paths"]] == [5] * 5
    assert doc["distribution"] == pytest.approx(distribution(result.summary))


def test_batches_run_overlapped_give_the_tables_of_one_batch(tmp_path, monkeypatch):
    """The runner builds a batch's tables while the kernel runs the next and the plan prepares
    the one after; none of that may change a number, and synthetic flow numbers its rows
    within each path whatever the batch."""
    market = pl.concat([market_frame(48, seed=k).with_columns(path_id=pl.lit(k)) for k in range(5)])
    market.write_parquet(tmp_path / "market.parquet")
    strategy = build_strategy(
        {
            "pool": {"initial_capital": 500_000.0},
            "flow": {"trades_per_day": 20.0},
            "hedge": {"policy": "threshold", "threshold": 0.01},
        },
        "test",
    )
    plan = prepare(strategy, market=tmp_path / "market.parquet", flow="synthetic")
    batches = Plan.batches
    results = []
    for size in (5, 2):
        monkeypatch.setattr(Plan, "batches", lambda plan, size=size: batches(plan, size))
        parts = list(run_batches(plan))
        tables = [
            pl.concat([getattr(t, n) for _, t in parts]) for n in ("steps", "trades", "hedges")
        ]
        summary = pl.concat([s for s, _ in parts]).drop("n_paths")  # a batch's, until run() ends
        results.append([summary, *tables])
    whole, batched = results
    assert whole[0].height == 5 and whole[2].height > 0
    for one, other in zip(whole, batched, strict=True):
        assert one.equals(other)
    rows = (
        plan.batch(0, 5)
        .flow.group_by("path_id")
        .agg(first=pl.col("flow_row").min(), last=pl.col("flow_row").max(), n=pl.len())
    )
    assert rows.height == 5 and (rows["first"] == 0).all() and (rows["last"] == rows["n"] - 1).all()
