"""Lent collateral ([lending], docs/design.md): the kinked rate by hand, the pool's own supply in
the market's utilisation, a recall blocked by a squeezed money market with every balance-sheet
stock pinned, a credit loss, the seeded utilisation process, bad input, and lending off changing
nothing."""

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
from backtest.inputs.lending import process, squeeze_pin
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


def squeezed(first_hour: int, hours: int) -> dict:
    """[lending] keys that pin the whole market at 100 % from T0 + first_hour for `hours`."""
    start = (T0 + first_hour * HOUR).isoformat()
    return {"squeeze_start": start, "squeeze_days": hours / 24.0, "squeeze_utilisation": 1.0}


NO_RATES = {"base_rate": 0.0, "slope1": 0.0, "slope2": 0.0}


def run(strat, market, flow, lp=None, util=None):
    tables, summary = simulate_frames(strat, market, flow, lp_flows=lp, utilisation=util)
    assert_reconciles(tables, summary)
    return tables, summary.row(0, named=True)


# --- the kinked rate ---------------------------------------------------------------------------


@pytest.mark.parametrize(("u", "borrow", "supply"), KINKED)
def test_kinked_rate_by_hand(u, borrow, supply):
    params = LendingParams(1.0, *RATES.values(), 1e9, 1.0, 1.0, 0.0)
    assert lending.borrow_rate(u, params) == pytest.approx(borrow, rel=1e-14)
    assert lending.supply_rate(u, params) == pytest.approx(supply, rel=1e-14)


@pytest.mark.parametrize(("u", "borrow", "supply"), KINKED)
def test_lent_cash_earns_the_supply_rate_into_pnl_interest_and_idle_yield_skips_it(
    u, borrow, supply
):
    """1 M, half lent to a market whose other suppliers hold 1 M and whose borrowers take u of
    that, 5 % idle yield: the pool's 500 k brings the utilisation to u x 1 M / 1.5 M; each hour
    the lent half earns the supply rate there and only the other half the idle yield; the
    market's borrowers pay borrow rate x what they borrow, of which the pool gets a third,
    less the reserve's cut."""
    strat = strategy(pool={"idle_yield": 0.05}, lending={"share": 0.5, "market_usd": 1e6, **RATES})
    tables, s = run(strat, hourly_market([2000.0] * 4), hourly_flow(), util=utilisation(u))
    steps = tables.steps
    params = LendingParams(0.5, *RATES.values(), 1e6, 1.0, 1.0, 0.0)
    at = u * 1e6 / (1e6 + steps["lent"].to_numpy())  # the pool's supply dilutes u
    assert steps["lending_utilisation"].to_numpy() == pytest.approx(at, rel=1e-14)
    rate = [lending.supply_rate(x, params) for x in at]
    assert steps["lending_rate"].to_list() == pytest.approx(rate, rel=1e-14)
    assert steps["lent"][0] == 500_000.0  # supplied at the end of the first tick
    lent_yield = 500_000.0 * rate[0] / YEAR_HOURS
    idle = 0.05 * 500_000.0 / YEAR_HOURS
    assert steps["lending_yield"][1] == pytest.approx(lent_yield, rel=1e-12)
    assert steps["pnl_interest"][1] == pytest.approx(lent_yield + idle, rel=1e-12)
    paid = lending.borrow_rate(at[0], params) * at[0] * 1.5e6 / YEAR_HOURS
    assert steps["lending_borrow_interest"][1] == pytest.approx(paid, rel=1e-12)
    assert lent_yield == pytest.approx(paid * (0.5 / 1.5) * 0.9, rel=1e-12)
    # The yield stays in the market; the rebalance keeps half of free cash lent.
    assert steps["lent"][1] == pytest.approx(0.5 * (1e6 + lent_yield + idle), rel=1e-12)
    assert steps["cash"][1] == pytest.approx(1e6 + lent_yield + idle, rel=1e-12)
    assert s["lending_yield"] == pytest.approx(steps["lending_yield"].sum(), rel=1e-12)
    assert s["lending_yield"] < s["pnl_interest"]
    assert s["lending_yield"] < s["lending_borrow_interest"]
    assert (steps["lent_locked"] == 0.0).all() and not steps["recall_blocked"].any()


def test_a_small_market_pays_a_large_supplier_little():
    """Before: the pool was a price taker, and 1 M lent into a market of 100 k at 80 % earned
    the 80 % rate, several times what all that market's borrowers paid. Its supply is now in
    the utilisation: 80 k borrowed of 1.1 M supplied is 7.3 %, and the pool's yield is a share
    of what those borrowers pay."""
    strat = strategy(lending={"share": 1.0, "market_usd": 1e5, **RATES})
    tables, s = run(strat, hourly_market([2000.0] * 48), hourly_flow(), util=utilisation(0.8))
    u = tables.steps["lending_utilisation"][1]
    assert u == pytest.approx(0.8e5 / (1e5 + tables.steps["lent"][1]), rel=1e-12)
    assert u < 0.075
    assert 0.0 < s["lending_yield"] < s["lending_borrow_interest"]
    assert s["lending_yield"] / s["lending_borrow_interest"] == pytest.approx(
        0.9 * 1e6 / 1.1e6, rel=1e-3
    )


# --- a recall blocked by a full money market -------------------------------------------------


def test_a_full_market_blocks_the_recall_then_liquidity_returns():
    """1 M pool, 80 % of free cash lent to a market whose others supply 1 M, half borrowed. At
    hours 1-2 a squeeze pins it at 100 %: the market repays nothing, 800 k is stuck. A put sale
    that needs 2,000 a contract of cash is cut where free cash reaches 800 k, the next row is
    refused, a 100 k withdrawal waits; at hour 3 the market has 1.3 M of free liquidity, of
    which the pool can take 5/13 (500 k can be repaid, 300 k stuck) and it is paid."""
    strat = strategy(
        lending={"share": 0.8, "market_usd": 1e6, "recall_share": 5 / 13}
        | NO_RATES
        | squeezed(1, 2)
    )
    market = hourly_market([2000.0] * 6, iv=0.6)
    flow = hourly_flow((1, WEEK, 2000, "P", +1, 200), (1, WEEK, 2000, "P", +1, 10))
    lp = hourly_lp((1, -100_000.0))
    util = utilisation(0.5)
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
    strat = strategy(
        lending={"share": 1.0, "market_usd": 1e6, "recall_share": 0.5} | NO_RATES | squeezed(1, 2)
    )
    market = hourly_market([2000.0] * 5)
    tables, _ = run(strat, market, hourly_flow(), hourly_lp((1, -5e6)), utilisation(0.5))
    steps = tables.steps
    # 1 M lent. While the LP waits the pool recalls what the market can repay: nothing in the
    # squeeze; at hour 3 half of 2 M x (1 - 0.25) = 750 k (250 k still stuck); at hour 4 the
    # market can repay 375 k of the 250 k left: nothing is stuck and the LP is paid.
    assert steps["shares"].to_list()[:4] == [1e6] * 4
    assert steps["recall_blocked"].to_list() == [False, True, True, True, False]
    assert steps["lent"].to_list()[:4] == pytest.approx([1e6, 1e6, 1e6, 2.5e5], rel=1e-12)
    assert steps["lent_locked"].to_list()[:4] == pytest.approx([0, 1e6, 1e6, 2.5e5], rel=1e-12)
    assert steps["shares"][4] == 0.0 and steps["nav"][4] == 0.0 and steps["lent"][4] == 0.0
    (paid,) = tables.lp.filter(pl.col("event") == "withdrawal").iter_rows(named=True)
    assert paid["waited"] and paid["amount"] == pytest.approx(-steps["nav"][3], rel=1e-9)


def test_withdrawals_queued_behind_a_waiting_one_wait_too():
    """First in, first out: a request due while the one ahead waits is marked as waiting too,
    and both are paid when the market can repay again."""
    strat = strategy(lending={"share": 1.0, "market_usd": 1e6} | NO_RATES | squeezed(1, 2))
    lp = hourly_lp((1, -100_000.0), (2, -50_000.0))
    tables, s = run(strat, hourly_market([2000.0] * 4), hourly_flow(), lp, utilisation(0.5))
    paid = tables.lp.filter(pl.col("event") == "withdrawal")
    assert paid["ts"].to_list() == [T0 + 3 * HOUR] * 2 and paid["waited"].all()
    assert paid["amount"].to_list() == pytest.approx([-1e5, -5e4], rel=1e-12)
    assert s["n_withdrawals_waited"] == 2 and s["n_recall_blocked"] == 2


# --- what a squeeze costs ---------------------------------------------------------------------


def test_no_new_supply_into_a_frozen_market_and_a_credit_loss_at_its_end():
    """Before: the pool kept supplying new cash into a market pinned at 100 % and earned its
    rate at face value, so a squeeze was a gain. Now a deposit during the squeeze stays in
    hand (nothing is supplied while the market is at or above max_supply_utilisation), and
    when the squeeze ends bad_debt_share of what is lent is written off: NAV falls by exactly
    that, in pnl_credit."""
    strat = strategy(
        lending={"share": 1.0, "market_usd": 1e6, "bad_debt_share": 0.25, **RATES} | squeezed(1, 3)
    )
    lp = hourly_lp((2, 300_000.0))
    tables, s = run(strat, hourly_market([2000.0] * 6), hourly_flow(), lp, utilisation(0.5))
    steps = tables.steps
    lent, cash = steps["lent"].to_numpy(), steps["cash"].to_numpy()
    assert lent[2] == lent[1] + steps["lending_yield"][2]  # the deposit was not supplied
    assert cash[2] - lent[2] == pytest.approx(300_000.0, rel=1e-12)
    # Hour 4, the first after the squeeze: the written-off quarter of what was lent.
    loss = 0.25 * (lent[3] + steps["lending_yield"][4])
    assert steps["pnl_credit"].to_list() == pytest.approx([0, 0, 0, 0, -loss, 0], abs=1e-9)
    others = steps["pnl_total"][4] - steps["pnl_credit"][4]
    assert steps["nav"][4] - steps["nav"][3] == pytest.approx(others - loss, rel=1e-12)
    assert steps["pnl_interest"][4] == pytest.approx(steps["lending_yield"][4], rel=1e-12)
    assert s["pnl_credit"] == pytest.approx(-loss, rel=1e-12)
    # The squeeze's rate was earned on what could not be recalled, and a quarter lost.
    assert s["pnl_credit"] + s["lending_yield"] < 0.0


def test_locked_cash_beyond_cash_in_hand_is_a_collateral_gap():
    """Short calls lock their spot value in cash; the rest is lent. Spot rises 10 % while the
    market is squeezed: the calls need more cash than the pool has in hand and it cannot
    recall what it lent. Free cash (lent cash included) is still positive, so nothing is
    liquidated, but the gap is reported: locked cash less cash in hand."""
    strat = strategy(lending={"share": 1.0, "market_usd": 1e6} | NO_RATES | squeezed(1, 3))
    market = hourly_market([2000.0, 2000.0, 2200.0, 2200.0, 2200.0], iv=0.6)
    flow = hourly_flow((0, WEEK, 2000, "C", +1, 300))
    tables, s = run(strat, market, flow, util=utilisation(0.5))
    steps = tables.steps
    locked = 300 * 2200.0
    in_hand = steps["cash"][2] - steps["lent"][2]
    assert steps["free_cash"][2] > 0.0 and locked > in_hand
    assert steps["collateral_gap"][2] == pytest.approx(locked - in_hand, rel=1e-9)
    assert steps["collateral_gap"][0] == 0.0 and s["n_liquidations"] == 0
    assert steps["collateral_gap"][4] == 0.0  # recalled once the squeeze is over


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
    assert (one < 1.0).all() and (one > 0.0).all()
    assert one[0] == pytest.approx(0.7, rel=1e-12)  # starts at its mean
    inside = (ns >= ns[30]) & (ns < ns[42])
    pin = squeeze_pin(ns, cfg)
    assert (pin[inside] == 1.0).all() and np.isnan(pin[~inside]).all()
    # The run reads the same demand (single path: path_id 0, [flow] seed), diluted by the
    # pool's own supply outside the squeeze and pinned inside it.
    market = pl.DataFrame({"ts": ts.astype("datetime64[us]"), "spot": 2000.0, "iv": 0.6})
    market = market.with_columns(pl.col("ts").dt.replace_time_zone("UTC"))
    strat = strategy(flow={"seed": 7}, lending=cfg.model_dump() | {"utilisation": "process"})
    tables, _ = run(strat, market, hourly_flow())
    steps = tables.steps
    diluted = one * cfg.market_usd / (cfg.market_usd + steps["lent"].to_numpy())
    expected = np.where(inside, 1.0, diluted)
    assert steps["lending_utilisation"].to_numpy() == pytest.approx(expected, rel=1e-14)


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
