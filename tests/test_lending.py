"""Lent collateral ([lending], docs/design.md): the kinked rate by hand, a recall blocked by a
full money market with every balance-sheet stock pinned, the seeded utilisation process, bad
input, and lending off changing nothing."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from scenarios import (
    HOUR,
    T0,
    UTC_US,
    assert_reconciles,
    flow_frame,
    hourly_flow,
    hourly_lp,
    hourly_market,
    market_frame,
)
from test_bad_input import assert_one_line_error, run_cli, write

from backtest.config import LendingConfig
from backtest.inputs.lending import process
from backtest.kernel import lending
from backtest.kernel.types import LendingParams
from backtest.pricing import price
from backtest.runner import simulate_frames

YEAR_HOURS = 365.0 * 24.0
WEEK = 7 * 24
# Hand-computed: base 1 %, slope1 4 % up to a kink at 80 %, slope2 75 % beyond, reserve 10 %.
RATES = {"base_rate": 0.01, "slope1": 0.04, "kink": 0.8, "slope2": 0.75, "reserve_factor": 0.1}
# (u, borrow rate, supply rate = borrow x u x (1 - 0.1))
KINKED = [
    (0.4, 0.01 + 0.04 * 0.4 / 0.8, 0.03 * 0.4 * 0.9),  # below the kink: 3 %, 1.08 %
    (0.8, 0.01 + 0.04, 0.05 * 0.8 * 0.9),  # at the kink: 5 %, 3.6 %
    (0.9, 0.01 + 0.04 + 0.75 * 0.1 / 0.2, 0.425 * 0.9 * 0.9),  # above: 42.5 %, 34.425 %
]
QUIET = {  # fees, costs and hedging off; full collateral that does not bind before lending does
    "pool": {"initial_capital": 1_000_000.0, "collateral": "full", "max_utilisation": 1.0},
    "pricing": {"base_fee": 0.0, "spot_fee": 0.0},
    "hedge": {"policy": "none"},
    "slippage": {"model": "none"},
}


def strategy(**sections) -> dict:
    out = {name: dict(keys) for name, keys in QUIET.items()}
    for name, keys in sections.items():
        out.setdefault(name, {}).update(keys)
    return out


def utilisation(*values: float) -> pl.DataFrame:
    """One row per hour from T0."""
    return pl.DataFrame(
        {"ts": [T0 + h * HOUR for h in range(len(values))], "utilisation": list(values)},
        schema={"ts": UTC_US, "utilisation": pl.Float64},
    )


def run(strat, market, flow, lp=None, util=None):
    tables, summary = simulate_frames(strat, market, flow, lp_flows=lp, utilisation=util)
    assert_reconciles(tables, summary)
    return tables, summary.row(0, named=True)


# --- the kinked rate ---------------------------------------------------------------------------


@pytest.mark.parametrize(("u", "borrow", "supply"), KINKED)
def test_kinked_rate_by_hand(u, borrow, supply):
    params = LendingParams(1.0, *RATES.values(), 1e9, 1.0)
    assert lending.borrow_rate(u, params) == pytest.approx(borrow, rel=1e-14)
    assert lending.supply_rate(u, params) == pytest.approx(supply, rel=1e-14)


@pytest.mark.parametrize(("u", "borrow", "supply"), KINKED)
def test_lent_cash_earns_the_supply_rate_into_pnl_interest_and_idle_yield_skips_it(
    u, borrow, supply
):
    """1 M, half lent at a constant u, 5 % idle yield: each hour the lent half earns the
    supply rate and only the other half the idle yield."""
    strat = strategy(pool={"idle_yield": 0.05}, lending={"share": 0.5, **RATES})
    tables, s = run(strat, hourly_market([2000.0] * 4), hourly_flow(), util=utilisation(u))
    steps = tables.steps
    assert steps["lending_rate"].to_list() == pytest.approx([supply] * 4, rel=1e-14)
    assert steps["lending_utilisation"].to_list() == [u] * 4
    assert steps["lent"][0] == 500_000.0  # supplied at the end of the first tick
    lent_yield = 500_000.0 * supply / YEAR_HOURS
    idle = 0.05 * 500_000.0 / YEAR_HOURS
    assert steps["lending_yield"][1] == pytest.approx(lent_yield, rel=1e-12)
    assert steps["pnl_interest"][1] == pytest.approx(lent_yield + idle, rel=1e-12)
    # The yield stays in the market; the rebalance keeps half of free cash lent.
    assert steps["lent"][1] == pytest.approx(0.5 * (1e6 + lent_yield + idle), rel=1e-12)
    assert steps["cash"][1] == pytest.approx(1e6 + lent_yield + idle, rel=1e-12)
    assert s["lending_yield"] == pytest.approx(steps["lending_yield"].sum(), rel=1e-12)
    assert s["lending_yield"] < s["pnl_interest"]
    assert (steps["lent_locked"] == 0.0).all() and not steps["recall_blocked"].any()


# --- a recall blocked by a full money market -------------------------------------------------


def test_a_full_market_blocks_the_recall_then_liquidity_returns():
    """1 M pool, 80 % of free cash lent to a 1 M market. At hour 1 utilisation goes to 100 %:
    the market repays nothing, 800 k is stuck. A put sale that needs 2,000 a contract of cash
    is cut where free cash reaches 800 k, the next row is refused, a 100 k withdrawal waits;
    at hour 3 utilisation is back at 50 % (500 k can be repaid, 300 k stuck) and it is paid."""
    strat = strategy(
        lending={
            "share": 0.8,
            "base_rate": 0.0,
            "slope1": 0.0,
            "slope2": 0.0,
            "market_usd": 1_000_000.0,
        }
    )
    market = hourly_market([2000.0] * 6, iv=0.6)
    flow = hourly_flow((1, WEEK, 2000, "P", +1, 200), (1, WEEK, 2000, "P", +1, 10))
    lp = hourly_lp((1, -100_000.0))
    util = utilisation(0.5, 1.0, 1.0, 0.5, 0.5, 0.5)
    tables, s = run(strat, market, flow, lp, util)
    steps, trades, lp_rows = tables.steps, tables.trades, tables.lp

    premium = price("P", 2000.0, 2000.0, (WEEK - 1) / YEAR_HOURS, 0.6)
    x = 200_000.0 / (2000.0 - premium)  # free cash 1 M + x premium - 2,000 x = 800 k
    assert trades["filled"].to_list() == pytest.approx([x, 0.0], rel=1e-9)
    assert trades["reject_reason"].to_list() == ["collateral_locked", "collateral_locked"]
    assert trades["mark"][0] == pytest.approx(premium, rel=1e-12)

    cash = steps["cash"].to_numpy()
    lent = steps["lent"].to_numpy()
    free = steps["free_cash"].to_numpy()
    locked = steps["collateral_required"].to_numpy()  # a short put locks its strike in cash
    shares = steps["shares"].to_numpy()
    # Hour 0: 800 k lent, 200 k in hand, nothing locked, nothing stuck.
    assert (cash[0], lent[0], free[0], locked[0], shares[0]) == (1e6, 8e5, 1e6, 0.0, 1e6)
    assert steps["lent_locked"][0] == 0.0 and not steps["recall_blocked"][0]
    # Hours 1 and 2: the market repays nothing; the pool wrote x puts; the LP waits.
    for t in (1, 2):
        assert cash[t] == pytest.approx(1e6 + x * premium, rel=1e-12)
        assert lent[t] == 8e5 and steps["lent_locked"][t] == 8e5
        assert cash[t] - lent[t] == pytest.approx(2e5 + x * premium, rel=1e-12)  # in hand
        assert free[t] == pytest.approx(8e5, rel=1e-9)  # all of it lent and stuck
        assert locked[t] == pytest.approx(2000.0 * x, rel=1e-12)
        assert shares[t] == 1e6  # nobody has left
        assert steps["recall_blocked"][t]
    assert lp_rows["event"].to_list() == ["request", "withdrawal"]
    # Hour 3: 500 k can be repaid, 300 k stays stuck; 100 k of shares paid at hour 3's NAV.
    paid = lp_rows.row(1, named=True)
    assert paid["ts"] == T0 + 3 * HOUR and paid["waited"]
    nav_per_share = steps["nav"][2] / 1e6 + steps["pnl_total"][3] / 1e6
    assert paid["amount"] == pytest.approx(-1e5 * nav_per_share, rel=1e-12)
    assert shares[3] == pytest.approx(9e5, rel=1e-12)
    assert cash[3] == pytest.approx(1e6 + x * premium + paid["amount"], rel=1e-12)
    assert free[3] == pytest.approx(8e5 + paid["amount"], rel=1e-9)
    assert lent[3] == pytest.approx(0.8 * free[3], rel=1e-12)  # recalled down to the target
    assert steps["lent_locked"][3] == pytest.approx(3e5, rel=1e-9)
    assert not steps["recall_blocked"][3:].any()
    assert s["n_partial_collateral_locked"] == 1 and s["n_rejected_collateral_locked"] == 1
    assert s["n_recall_blocked"] == 2 and s["n_withdrawals_waited"] == 1
    assert s["max_lent_locked"] == 8e5

    # The same pool without lending fills both rows and pays the LP at hour 1.
    plain, _ = run(strategy(), market, flow, lp, util)
    assert plain.trades["filled"].to_list() == [200.0, 10.0]
    assert plain.lp["ts"].to_list() == [T0 + HOUR, T0 + HOUR]
    assert not plain.lp["waited"].any()


def test_a_stuck_market_holds_the_last_lp_until_nothing_is_stuck():
    """The last LP takes every dollar: with any lent cash stuck the exit waits; when the market
    can repay everything it is paid and the pool is left empty."""
    no_rates = {"base_rate": 0.0, "slope1": 0.0, "slope2": 0.0}
    strat = strategy(lending={"share": 1.0, "market_usd": 1_000_000.0, **no_rates})
    util = utilisation(0.5, 1.0, 0.9, 0.2, 0.2)
    tables, _ = run(strat, hourly_market([2000.0] * 5), hourly_flow(), hourly_lp((1, -5e6)), util)
    steps = tables.steps
    # 1 M lent. While the LP waits the pool recalls what the market can repay: nothing at
    # 100 %, 100 k at 90 %, 800 k at 20 % (100 k still stuck); at hour 4 nothing is stuck.
    assert steps["shares"].to_list()[:4] == [1e6] * 4
    assert steps["recall_blocked"].to_list() == [False, True, True, True, False]
    assert steps["lent"].to_list()[:4] == pytest.approx([1e6, 1e6, 9e5, 1e5], rel=1e-12)
    assert steps["lent_locked"].to_list()[:4] == pytest.approx([0, 1e6, 9e5, 1e5], rel=1e-12)
    assert steps["shares"][4] == 0.0 and steps["nav"][4] == 0.0 and steps["lent"][4] == 0.0
    (paid,) = tables.lp.filter(pl.col("event") == "withdrawal").iter_rows(named=True)
    assert paid["waited"] and paid["amount"] == pytest.approx(-steps["nav"][3], rel=1e-9)


def test_withdrawals_queued_behind_a_waiting_one_wait_too():
    """First in, first out: a request due while the one ahead waits is marked as waiting too,
    and both are paid when the market can repay again."""
    no_rates = {"base_rate": 0.0, "slope1": 0.0, "slope2": 0.0}
    strat = strategy(lending={"share": 1.0, "market_usd": 1_000_000.0, **no_rates})
    util = utilisation(0.5, 1.0, 1.0, 0.5)
    lp = hourly_lp((1, -100_000.0), (2, -50_000.0))
    tables, s = run(strat, hourly_market([2000.0] * 4), hourly_flow(), lp, util)
    paid = tables.lp.filter(pl.col("event") == "withdrawal")
    assert paid["ts"].to_list() == [T0 + 3 * HOUR] * 2 and paid["waited"].all()
    assert paid["amount"].to_list() == pytest.approx([-1e5, -5e4], rel=1e-12)
    assert s["n_withdrawals_waited"] == 2 and s["n_recall_blocked"] == 2


# --- off changes nothing ----------------------------------------------------------------------


def test_share_zero_is_no_lending_at_all():
    market = market_frame(48, seed=3)
    flow = flow_frame(market, 30, seed=4)
    base = {"hedge": {"policy": "threshold", "threshold": 0.01}, "pool": {"idle_yield": 0.03}}
    off = base | {
        "lending": {"share": 0.0, "utilisation": "nowhere.parquet", "slope1": 0.5, "kink": 0.5}
    }
    plain, plain_summary = simulate_frames(base, market, flow)
    other, other_summary = simulate_frames(off, market, flow)
    for name in ("steps", "trades", "hedges", "series", "liquidations", "lp"):
        assert getattr(plain, name).equals(getattr(other, name)), name
    assert plain_summary.equals(other_summary)
    assert (plain.steps["lent"] == 0.0).all() and (plain.steps["lending_rate"] == 0.0).all()


# --- the utilisation process ------------------------------------------------------------------


def test_the_process_is_seeded_per_path_and_the_squeeze_is_pinned():
    ts = np.array([np.datetime64("2024-01-01T00:00") + np.timedelta64(h, "h") for h in range(96)])
    ns = ts.astype("datetime64[ns]").astype(np.int64)
    cfg = LendingConfig(
        share=0.5,
        util_mean=0.7,
        util_reversion=2.0,
        util_vol=1.0,
        squeeze_start="2024-01-02T06:00",
        squeeze_days=0.5,
        squeeze_utilisation=1.0,
    )
    one = process(ns, cfg, seed=7, path_id=0)
    assert np.array_equal(one, process(ns, cfg, seed=7, path_id=0))
    assert not np.array_equal(one, process(ns, cfg, seed=7, path_id=1))
    assert not np.array_equal(one, process(ns, cfg, seed=8, path_id=0))
    inside = (ns >= ns[30]) & (ns < ns[42])
    assert (one[inside] == 1.0).all() and (one[~inside] < 1.0).all() and (one > 0.0).all()
    assert one[0] == pytest.approx(0.7, rel=1e-12)  # starts at its mean
    # The run reads the same array (single path: path_id 0, [flow] seed).
    market = pl.DataFrame({"ts": ts.astype("datetime64[us]"), "spot": 2000.0, "iv": 0.6})
    market = market.with_columns(pl.col("ts").dt.replace_time_zone("UTC"))
    strat = strategy(flow={"seed": 7}, lending=cfg.model_dump() | {"utilisation": "process"})
    tables, _ = run(strat, market, hourly_flow())
    assert np.array_equal(tables.steps["lending_utilisation"].to_numpy(), one)


# --- bad input --------------------------------------------------------------------------------


@pytest.fixture
def files(tmp_path):
    market = market_frame(24)
    util = pl.DataFrame({"ts": market["ts"], "utilisation": np.linspace(0.5, 0.99, 24)})
    return tmp_path, write(market, tmp_path / "market.parquet"), util


UTILISATION_CASES = {
    "above one": (
        lambda u: u.with_columns(
            utilisation=pl.when(pl.int_range(pl.len()) == 3)
            .then(1.2)
            .otherwise(pl.col("utilisation"))
        ),
        ["column 'utilisation'", "row 3", "[0, 1]"],
    ),
    "nan": (
        lambda u: u.with_columns(
            utilisation=pl.when(pl.int_range(pl.len()) == 5)
            .then(float("nan"))
            .otherwise(pl.col("utilisation"))
        ),
        ["column 'utilisation'", "row 5"],
    ),
    "missing column": (lambda u: u.drop("utilisation"), ["column 'utilisation'", "missing"]),
    "unsorted": (lambda u: u.reverse(), ["column 'ts'", "row 1", "unsorted"]),
    "starts late": (lambda u: u.slice(2), ["column 'ts'", "row 0", "after the market's first"]),
}


@pytest.mark.parametrize("case", UTILISATION_CASES)
def test_bad_utilisation_file(case, files):
    tmp_path, market_path, util = files
    change, needles = UTILISATION_CASES[case]
    path = write(change(util), tmp_path / "util.parquet")
    text = f'[data]\nmarket = "{market_path}"\n[lending]\nshare = 0.5\nutilisation = "{path}"\n'
    (tmp_path / "s.toml").write_text(text)
    out = tmp_path / "runs"
    code, output = run_cli("run", str(tmp_path / "s.toml"), "--out", str(out), "--no-report")
    assert_one_line_error(code, output, "util.parquet", *needles)
    assert not out.exists()
    # On its own a file is told by its columns, and one starting late is a fine file.
    if case not in ("starts late", "missing column"):
        code, output = run_cli("data", "validate", str(path))
        assert_one_line_error(code, output, "util.parquet", *needles)


def test_a_good_utilisation_file_validates(files):
    tmp_path, _, util = files
    path = write(util, tmp_path / "util.parquet")
    code, output = run_cli("data", "validate", str(path))
    assert code == 0 and "utilisation, 24 rows" in output


LENDING_KEYS = {
    "unknown key": ("shares = 0.5", ["[lending] shares", "unknown key"]),
    "share above one": ("share = 1.5", ["[lending] share"]),
    "kink at one": ("kink = 1.0", ["[lending] kink"]),
    "negative slope": ("slope2 = -0.1", ["[lending] slope2"]),
    "reserve above one": ("reserve_factor = 2", ["[lending] reserve_factor"]),
    "mean of one": ("util_mean = 1.0", ["[lending] util_mean"]),
    "no recall": ("recall_share = 0", ["[lending] recall_share"]),
    "bad squeeze date": ('squeeze_start = "soon"', ["[lending] squeeze_start"]),
    "missing file": (
        'share = 0.5\nutilisation = "nowhere.parquet"',
        ["[lending] utilisation", "not found"],
    ),
}


@pytest.mark.parametrize("case", LENDING_KEYS)
def test_bad_lending_key(case, tmp_path):
    text, needles = LENDING_KEYS[case]
    path = tmp_path / "bad.toml"
    path.write_text(f"[lending]\n{text}\n")
    out = tmp_path / "runs"
    code, output = run_cli("run", str(path), "--out", str(out), "--no-report")
    assert_one_line_error(code, output, *needles)
    assert not out.exists()
