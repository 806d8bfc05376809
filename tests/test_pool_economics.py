"""Pool economics beyond delta: surfaces, inventory impact, circuit breakers, LP flows and
informed flow — each as configured, with the ledger still reconciling."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
from scenarios import START, assert_reconciles, no_fees

from backtest.inputs.flow import FLOW_SCHEMA
from backtest.inputs.surface import Surface, load_surface
from backtest.pricing import greeks
from backtest.runner import simulate_frames

HOUR = dt.timedelta(hours=1)


def flat_market(n: int, spot: float = 2000.0, iv: float = 0.6, **columns) -> pl.DataFrame:
    frame = pl.DataFrame(
        {"ts": [START + h * HOUR for h in range(n)], "spot": [spot] * n, "iv": [iv] * n}
    ).with_columns(pl.col("ts").dt.cast_time_unit("us"))
    return frame.with_columns(**{k: pl.Series(v) for k, v in columns.items()})


def trades_at(*rows: tuple) -> pl.DataFrame:
    """Rows of (hour, tenor hours, strike, kind, side, size)."""
    return pl.DataFrame(
        [
            {
                "ts": START + h * HOUR + dt.timedelta(minutes=1),
                "expiry": START + (h + tenor) * HOUR,
                "strike": k,
                "kind": kind,
                "side": side,
                "size": size,
            }
            for h, tenor, k, kind, side, size in rows
        ],
        schema=FLOW_SCHEMA,
    )


def test_surface_marks_with_the_latest_snapshot_only(tmp_path):
    market = flat_market(10, iv=0.9)
    grid = [(tenor, k) for tenor in (1.0, 30.0) for k in (-0.2, 0.0, 0.2)]
    published = START + 3 * HOUR + dt.timedelta(minutes=30)  # between ticks 3 and 4
    rows = [
        {
            "ts": published,
            "tenor_days": tenor,
            "log_moneyness": k,
            "iv": (0.4 if tenor == 1.0 else 0.6) + 0.1 * abs(k) / 0.2,
        }
        for tenor, k in grid
    ]
    pl.DataFrame(rows).write_parquet(tmp_path / "surface.parquet")
    surface = load_surface(tmp_path / "surface.parquet")
    tenor_days = 10.0
    flow = trades_at(
        (2, 24 * tenor_days, 2000.0, "C", 1, 1.0), (5, 24 * tenor_days, 2000.0, "C", 1, 1.0)
    )
    tables, summary = simulate_frames(no_fees(), market, flow, surface=surface)
    ivs = tables.trades["iv"].to_list()
    assert ivs[0] == pytest.approx(0.9)  # before the snapshot: ATM iv of the market file
    tau = tenor_days  # the row at tick 5 expires tenor_days after that tick
    w = (tau - 1.0) / (30.0 - 1.0)
    expected = np.sqrt(((1 - w) * 0.4**2 * 1.0 + w * 0.6**2 * 30.0) / tau)
    assert ivs[1] == pytest.approx(expected, rel=1e-9)
    assert_reconciles(tables, summary)


def test_surface_rejects_a_ragged_grid(tmp_path):
    rows = [
        {"ts": START, "tenor_days": 7.0, "log_moneyness": 0.0, "iv": 0.5},
        {"ts": START, "tenor_days": 30.0, "log_moneyness": 0.0, "iv": 0.5},
        {"ts": START + HOUR, "tenor_days": 7.0, "log_moneyness": 0.0, "iv": 0.5},
    ]
    pl.DataFrame(rows).write_parquet(tmp_path / "s.parquet")
    from backtest.errors import InputError

    with pytest.raises(InputError, match="full grid"):
        load_surface(tmp_path / "s.parquet")


def test_inventory_impact_moves_expiry_and_strike_then_decays():
    market = flat_market(30, iv=0.6)
    strategy = no_fees(
        pricing={
            "iv_impact": 0.02,
            "skew_impact": 0.01,
            "standard_size": 50.0,
            "impact_half_life": 4.0,
        },
        pool={"max_utilisation": 1.0},
    )
    week = 24 * 7
    flow = trades_at(
        (0, week, 2000.0, "C", 1, 100.0),  # trader buys 2 standard sizes
        (1, week - 1, 2000.0, "P", 1, 0.001),  # same expiry and strike, a put: sees both moves
        (1, week - 1, 2200.0, "C", 1, 0.001),  # same expiry, other strike: expiry move only
        (5, week - 5, 2200.0, "C", 1, 0.001),  # four hours later: half of the expiry move left
    )
    tables, summary = simulate_frames(strategy, market, flow)
    ivs = tables.trades["iv"].to_list()
    # Each fill pays the vol half way through its own move; the tiny ones move nothing.
    assert ivs[0] == pytest.approx(0.6 + 0.5 * 2 * (0.02 + 0.01))
    assert ivs[1] == pytest.approx(
        0.6 + 2 * 0.02 * 0.5 ** (1 / 4) + 2 * 0.01 * 0.5 ** (1 / 4), rel=1e-5
    )
    assert ivs[2] == pytest.approx(0.6 + 2 * 0.02 * 0.5 ** (1 / 4), rel=1e-5)
    assert ivs[3] == pytest.approx(0.6 + 2 * 0.02 * 0.5 ** (5 / 4), rel=1e-3)
    # The buyer paid for the move over the mark (pnl_impact); the pool, short the calls, then
    # loses the marked-up vol at the next mark.
    vega = greeks("C", 2000.0, 2000.0, week / (365 * 24), 0.6).vega
    assert tables.steps["pnl_impact"][0] == pytest.approx(100 * vega * 0.03, rel=0.01)
    assert tables.trades["impact"][0] == pytest.approx(tables.steps["pnl_impact"][0])
    tick1_vega_pnl = tables.steps["pnl_vega"][1]
    assert tick1_vega_pnl == pytest.approx(-100 * vega * 0.06 * 0.5 ** (1 / 4), rel=0.01)
    assert_reconciles(tables, summary)


def test_iv_circuit_breaker_halts_then_resumes():
    iv = [0.6] * 10 + [0.9] * 20
    market = flat_market(30).with_columns(iv=pl.Series(iv))
    strategy = no_fees(pricing={"cb_iv_move": 0.1, "cb_hours": 5.0})
    flow = trades_at(*[(h, 48, 2000.0, "C", 1, 1.0) for h in range(30)])
    tables, summary = simulate_frames(strategy, market, flow)
    reasons = tables.trades["reject_reason"].to_list()
    halted = tables.steps["halted"].to_list()
    assert reasons[:10] == [""] * 10
    # Tick 10 jumps 0.3 above the trailing 5-hour geometric mean and halts flow for 5 hours.
    # The breaker re-arms while the mean still holds the old 0.6s: at tick 13 it is
    # exp((2 ln 0.6 + 3 ln 0.9) / 5) = 0.77, still 0.13 away, so the halt runs to tick 13 + 5 h;
    # at tick 14 the mean is 0.83 (within 0.1) and does not re-trigger.
    assert reasons[10:18] == ["circuit_breaker"] * 8
    assert reasons[18:] == [""] * 12
    assert halted[10:18] == [True] * 8 and not any(halted[18:]) and not any(halted[:10])
    assert_reconciles(tables, summary)


def test_free_capital_circuit_breaker():
    market = flat_market(20)
    strategy = no_fees(pricing={"cb_min_free": 0.5, "cb_hours": 3.0}, pool={"max_utilisation": 0.9})
    # Short calls tie up spot each: 300 calls x 2000 = 600k of 1M, so free capital drops to 40 %.
    flow = trades_at(
        (0, 48, 2000.0, "C", 1, 300.0), *[(h, 48, 2000.0, "P", 1, 1.0) for h in (1, 2, 3, 4)]
    )
    tables, _ = simulate_frames(strategy, market, flow)
    assert tables.trades["reject_reason"].to_list() == [
        "",
        "circuit_breaker",
        "circuit_breaker",
        "circuit_breaker",
        "circuit_breaker",
    ]


def test_lp_deposits_and_delayed_withdrawals_conserve_money_and_shares():
    market = flat_market(24)
    strategy = no_fees(
        lp={"withdrawal_delay": 3.0, "withdrawal_fee": 0.01}, pricing={"base_fee": 0.02}
    )
    flow = trades_at(*[(h, 48, 2000.0, "C", 1, 5.0) for h in range(0, 20, 2)])
    lp = pl.DataFrame(
        {
            "ts": [START + 5 * HOUR, START + 8 * HOUR + dt.timedelta(minutes=5)],
            "amount": [500_000.0, -200_000.0],
        }
    )
    tables, summary = simulate_frames(strategy, market, flow, lp_flows=lp)
    steps = tables.steps
    flows = steps["lp_flow"].to_list()
    nps = steps["nav_per_share"].to_numpy()
    shares = steps["shares"].to_numpy()
    assert flows[5] == 500_000.0
    # Deposits mint shares at the tick's NAV per share, which they do not change.
    assert shares[5] - shares[4] == pytest.approx(500_000.0 / nps[5], rel=1e-12)
    assert nps[5] == pytest.approx(nps[4] + steps["pnl_total"][5] / shares[4], rel=1e-12)
    # Requested at tick 8, paid at tick 11 (3 h later) at that tick's NAV per share, less 1 %.
    assert flows[8:11] == [0.0, 0.0, 0.0]
    burned = 200_000.0 / nps[8]
    assert shares[11] == pytest.approx(shares[10] - burned)
    assert flows[11] == pytest.approx(
        -burned * (steps["nav"][10] + steps["pnl_total"][11]) / shares[10] * 0.99
    )
    assert nps[11] > nps[10] + steps["pnl_total"][11] / shares[10]  # the fee stays with the LPs
    assert sum(1 for f in flows if f) == 2
    assert_reconciles(tables, summary)


def test_a_withdrawal_forces_the_book_to_shrink():
    market = flat_market(12)
    strategy = no_fees(pool={"max_utilisation": 0.8, "liquidation_penalty": 0.02})
    flow = trades_at((0, 48, 2000.0, "C", 1, 390.0))  # 780k of 1M: at the cap
    lp = pl.DataFrame({"ts": [START + 4 * HOUR], "amount": [-500_000.0]})
    tables, summary = simulate_frames(strategy, market, flow, lp_flows=lp)
    steps = tables.steps
    assert steps["pnl_liquidation"][4] < 0
    assert steps["utilisation"][4] <= 1.0 + 1e-9  # within NAV: it closed what the payout forced
    assert steps["lp_flow"][4] < -490_000
    assert tables.series["pnl_liquidation"].sum() == pytest.approx(steps["pnl_liquidation"].sum())
    assert_reconciles(tables, summary)


def test_run_rule_runs_again_at_each_drawdown_and_leavers_pay_the_buybacks():
    """Spot doubles while the pool is short calls: each further 5 % of drawdown sends 30 % of
    the shares out; paying them forces buybacks, whose penalty the leavers pay."""
    n = 40
    spot = np.concatenate([np.full(5, 2000.0), np.linspace(2000, 4000, n - 5)])
    market = flat_market(n).with_columns(spot=pl.Series(spot), iv=pl.lit(1.2))
    strategy = no_fees(
        pool={"max_utilisation": 1.0, "liquidation_penalty": 0.05},
        lp={"run_drawdown": 0.05, "run_fraction": 0.3, "withdrawal_delay": 1.0},
        hedge={"policy": "none"},
    )
    flow = trades_at((0, 24 * 30, 2200.0, "C", 1, 450.0))
    tables, summary = simulate_frames(strategy, market, flow)
    steps, lp = tables.steps, tables.lp
    paid = lp.filter(pl.col("event") == "withdrawal")
    assert paid.height >= 3 and lp.filter(pl.col("event") == "request").height == paid.height
    assert steps["shares"][-1] < 0.4 * 1e6
    assert (paid["unwind_cost"] > 0).all()
    closes = tables.liquidations.filter(pl.col("reason") == "withdrawal")
    assert paid["unwind_cost"].sum() == pytest.approx(closes["penalty"].sum(), rel=1e-9)
    assert_reconciles(tables, summary)


def test_informed_flow_loses_the_pool_money_where_noise_flow_does_not():
    """Regime-switching realised vol around a fair constant IV (the root of the mean variance):
    informed traders buy before the wild days and sell before the calm ones and take the pool's
    money; the same flow with random sides (noise) leaves it its fees, on average over paths."""
    rng = np.random.default_rng(3)
    n_paths, n_days, per_day = 16, 60, 24
    frames = []
    for path in range(n_paths):
        regime = np.repeat(rng.choice([0.3, 1.1], n_days), per_day)
        dt_years = 1 / (365 * 24)
        shocks = rng.standard_normal(regime.size)
        log_s = np.cumsum(-0.5 * regime**2 * dt_years + regime * np.sqrt(dt_years) * shocks)
        frames.append(
            pl.DataFrame(
                {
                    "path_id": path,
                    "ts": [START + h * HOUR for h in range(regime.size)],
                    "spot": 2000.0 * np.exp(log_s),
                    "iv": np.full(regime.size, np.sqrt(0.65)),
                }
            )
        )
    market = pl.concat(frames).with_columns(pl.col("ts").dt.cast_time_unit("us"))
    results = {}
    for fraction in (0.0, 1.0):
        strategy = {
            "flow": {
                "seed": 5,
                "trades_per_day": 30,
                "informed_fraction": fraction,
                "buy_fraction": 0.5,
                "informed_horizon": 24,
                "expiries": ["daily"],
                "max_tenor_days": 2,
                "iv_intensity": 0.0,
            },
            "pool": {"initial_capital": 1e7, "max_utilisation": 1.0},
            "pricing": {"base_fee": 0.03, "spot_fee": 0.0},
            "hedge": {"policy": "every_trade"},
            "slippage": {"model": "none"},
        }
        tables, summary = simulate_frames(strategy, market, None)
        results[fraction] = (summary, tables.trades.filter(pl.col("filled") > 0))
    noise, noise_trades = results[0.0]
    informed, informed_trades = results[1.0]
    # Informed traders need the next 24 hours of data; at the very end they trade as noise.
    assert informed_trades["informed"].mean() > 0.98 and not noise_trades["informed"].any()
    assert noise["pnl_total"].mean() > 0 > informed["pnl_total"].mean()
    assert (informed["pnl_total"] < noise["pnl_total"]).mean() > 0.9
    held = informed_trades["pnl_held_to_expiry"].drop_nans().sum()
    assert held < 0 < noise_trades["pnl_held_to_expiry"].drop_nans().sum()


def test_surface_dataclass_snapshot_lookup_is_causal():
    surface = Surface(
        ts=np.array([10, 20]),
        tenors=np.array([0.1]),
        log_moneyness=np.array([0.0]),
        vols=np.ones((2, 1, 1)),
    )
    assert surface.snapshot_at(np.array([5, 10, 15, 20, 25])).tolist() == [-1, 0, 0, 1, 1]


def test_many_withdrawals_in_one_tick_each_may_unwind_the_hedge():
    """Every paid withdrawal can force a hedge unwind: the hedge records must have room for all
    of them (they used to be sized for two fills per tick)."""
    # Short calls hedged with long spot; spot then falls 20 %: the hedge carries the worst
    # stress loss, so freeing collateral for each payout means unwinding some of it.
    market = flat_market(6, spot=100.0).with_columns(spot=pl.Series([100.0] * 4 + [80.0] * 2))
    strategy = no_fees(
        pool={"collateral": "dynamic", "max_utilisation": 0.5, "liquidation_threshold": 0.55},
        hedge={"policy": "every_trade"},
    )
    flow = trades_at(*[(h, 24 * 7, 100.0, "C", 1, 30_000.0) for h in range(4)])
    lp = pl.DataFrame({"ts": [START + 4 * HOUR] * 12, "amount": [-40_000.0] * 12})
    tables, summary = simulate_frames(strategy, market, flow, lp_flows=lp)
    unwinds = tables.hedges.filter(pl.col("reason") == "withdrawal")
    assert unwinds.height >= 3 and unwinds["ts"].n_unique() == 1  # all in one tick
    assert (unwinds["qty"].abs() > 1e-6).all()
    # The leavers got their NAV per share less what their closes cost; the stayers kept theirs.
    paid = tables.lp.filter(pl.col("event") == "withdrawal")
    cost = paid["unwind_cost"].sum()
    assert tables.steps["lp_flow"][4] == pytest.approx(-480_000.0 + cost, rel=1e-12)
    np.testing.assert_allclose(paid["nav_per_share"], tables.steps["nav_per_share"][4], rtol=1e-12)
    assert_reconciles(tables, summary)


def test_run_requests_waiting_out_a_delay_take_their_share_of_what_is_left():
    """Requests made while earlier ones wait out withdrawal_delay are run_fraction of the shares
    nobody has asked for yet: 50 %, then 25 %, then 12.5 % of the pool; never more than it."""
    n = 40
    spot = np.concatenate([np.full(5, 2000.0), np.linspace(2000, 4000, n - 5)])
    market = flat_market(n).with_columns(spot=pl.Series(spot), iv=pl.lit(1.2))
    strategy = no_fees(
        pool={"max_utilisation": 1.0},
        lp={"run_drawdown": 0.05, "run_fraction": 0.5, "withdrawal_delay": 30.0},
        hedge={"policy": "none"},
    )
    flow = trades_at((0, 24 * 30, 2200.0, "C", 1, 450.0))
    tables, _ = simulate_frames(strategy, market, flow)
    lp = tables.lp
    first_paid = lp.filter(pl.col("event") == "withdrawal")["ts"].min()
    early = lp.filter((pl.col("event") == "request") & (pl.col("ts") < first_paid))
    asked = -early["shares"].to_numpy()
    assert len(asked) >= 3
    assert asked[:3] == pytest.approx([5e5, 2.5e5, 1.25e5], rel=1e-12)
    assert -lp.filter(pl.col("event") == "request")["shares"].sum() <= 1e6 * (1 + 1e-12)
