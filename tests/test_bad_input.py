"""Every bad input in DESIGN's list ends in one line naming file, column or key and the first bad
row, exit code 2, no traceback, and no run folder."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest
from scenarios import flow_frame, market_frame
from typer.testing import CliRunner

from backtest.cli import app

runner = CliRunner()


def write(frame: pl.DataFrame, path: Path) -> Path:
    frame.write_parquet(path)
    return path


def run_cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def assert_one_line_error(code: int, output: str, *needles: str) -> None:
    assert code == 2, output
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert lines[0].startswith("error: ")
    assert "Traceback" not in output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.fixture
def market() -> pl.DataFrame:
    return market_frame(24)


MARKET_CASES = {
    "missing column": (lambda m: m.drop("iv"), ["column 'iv'", "missing required column"]),
    "text spot": (lambda m: m.with_columns(pl.col("spot").cast(pl.String)), ["column 'spot'"]),
    "nan iv": (
        lambda m: m.with_columns(
            iv=pl.when(pl.int_range(pl.len()) == 5).then(float("nan")).otherwise(pl.col("iv"))
        ),
        ["column 'iv'", "row 5"],
    ),
    "inf spot": (
        lambda m: m.with_columns(
            spot=pl.when(pl.int_range(pl.len()) == 3).then(float("inf")).otherwise(pl.col("spot"))
        ),
        ["column 'spot'", "row 3"],
    ),
    "negative spot": (
        lambda m: m.with_columns(
            spot=pl.when(pl.int_range(pl.len()) == 7).then(-1.0).otherwise(pl.col("spot"))
        ),
        ["column 'spot'", "row 7", "> 0"],
    ),
    "zero iv": (
        lambda m: m.with_columns(
            iv=pl.when(pl.int_range(pl.len()) == 2).then(0.0).otherwise(pl.col("iv"))
        ),
        ["column 'iv'", "row 2"],
    ),
    "duplicate ts": (
        lambda m: m.with_columns(
            ts=pl.when(pl.int_range(pl.len()) == 4)
            .then(pl.col("ts").shift(1))
            .otherwise(pl.col("ts"))
        ),
        ["column 'ts'", "row 4", "duplicate"],
    ),
    "unsorted ts": (
        lambda m: pl.concat([m.head(10), m.slice(11, 1), m.slice(10, 1), m.tail(12)]),
        ["column 'ts'", "row 11", "unsorted"],
    ),
    "string ts": (
        lambda m: m.with_columns(pl.col("ts").cast(pl.String)),
        ["column 'ts'", "timestamp"],
    ),
}


@pytest.mark.parametrize("case", MARKET_CASES)
def test_bad_market_file(case, market, tmp_path):
    change, needles = MARKET_CASES[case]
    path = write(change(market), tmp_path / "market.parquet")
    assert_one_line_error(*run_cli("data", "validate", str(path)), "market.parquet", *needles)
    out = tmp_path / "runs"
    code, output = run_cli("run", "--market", str(path), "--out", str(out))
    assert_one_line_error(code, output, "market.parquet", *needles)
    assert not out.exists() or not any(out.iterdir())


FLOW_CASES = {
    "expiry before ts": (
        lambda f: f.with_columns(
            expiry=pl.when(pl.int_range(pl.len()) == 3)
            .then(pl.col("ts") - pl.duration(hours=1))
            .otherwise(pl.col("expiry"))
        ),
        ["column 'expiry'", "row 3", "not after"],
    ),
    "bad kind": (
        lambda f: f.with_columns(
            kind=pl.when(pl.int_range(pl.len()) == 2).then(pl.lit("X")).otherwise(pl.col("kind"))
        ),
        ["column 'kind'", "row 2"],
    ),
    "bad side": (
        lambda f: f.with_columns(
            side=pl.when(pl.int_range(pl.len()) == 1)
            .then(0)
            .otherwise(pl.col("side"))
            .cast(pl.Int8)
        ),
        ["column 'side'", "row 1"],
    ),
    "zero size": (
        lambda f: f.with_columns(
            size=pl.when(pl.int_range(pl.len()) == 4).then(0.0).otherwise(pl.col("size"))
        ),
        ["column 'size'", "row 4"],
    ),
    "missing strike": (lambda f: f.drop("strike"), ["column 'strike'", "missing"]),
}


@pytest.mark.parametrize("case", FLOW_CASES)
def test_bad_flow_file(case, market, tmp_path):
    change, needles = FLOW_CASES[case]
    market_path = write(market, tmp_path / "market.parquet")
    path = write(change(flow_frame(market, 10)), tmp_path / "flow.parquet")
    assert_one_line_error(*run_cli("data", "validate", str(path)), "flow.parquet", *needles)
    out = tmp_path / "runs"
    code, output = run_cli(
        "run", "--market", str(market_path), "--flow", str(path), "--out", str(out)
    )
    assert_one_line_error(code, output, "flow.parquet", *needles)
    assert not out.exists()


STRATEGY_CASES = {
    "unknown key": (
        "[hedge]\nthreshhold = 0.1\n",
        ["[hedge] threshhold", "unknown key; did you mean 'threshold'?"],
    ),
    "unknown section": (
        "[hedging]\nthreshold = 0.1\n",
        ["hedging", "unknown key; did you mean 'hedge'?"],
    ),
    "bad policy": ('[hedge]\npolicy = "sometimes"\n', ["[hedge] policy", "sometimes"]),
    "out of range": ("[pool]\nmax_utilisation = -1\n", ["[pool] max_utilisation"]),
    "wrong type": ('[pricing]\nbase_fee = "lots"\n', ["[pricing] base_fee"]),
    "boolean": ("[flow]\nstrike_step = true\n", ["[flow] strike_step", "boolean"]),
    "negative elasticity": ("[flow]\nelasticity = -1\n", ["[flow] elasticity"]),
    "spread above 100 vol": ("[flow]\nreference_spread_vol = 2\n", ["[flow] reference_spread_vol"]),
    "negative notional": ("[flow]\nnotional_per_nav = -0.1\n", ["[flow] notional_per_nav"]),
    "infinite notional": ("[flow]\nnotional_per_nav = inf\n", ["[flow] notional_per_nav"]),
    "negative yield elasticity": ("[lp]\ndeposit_elasticity = -1\n", ["[lp] deposit_elasticity"]),
    "empty yield window": ("[lp]\nyield_window_days = 0\n", ["[lp] yield_window_days"]),
    "benchmark at -100 %": ("[lp]\nbenchmark_apy = -1\n", ["[lp] benchmark_apy"]),
    "negative half-life": (
        '[slippage]\nmodel = "cpmm"\narb_half_life = -1\n',
        ["[slippage] arb_half_life"],
    ),
    "half-life without cpmm": ("[slippage]\narb_half_life = 2\n", ["[slippage] arb_half_life"]),
    "bad mev model": ('[mev]\nmodel = "frontrun"\n', ["[mev] model", "frontrun"]),
    "sandwich without cpmm": ('[mev]\nmodel = "sandwich"\n', ["[mev] model", "cpmm"]),
    "sandwich with flat mev": (
        '[slippage]\nmodel = "cpmm"\nmev_bps = 3\n[mev]\nmodel = "sandwich"\n',
        ["[slippage] mev_bps"],
    ),
    "private without sandwich": ('[mev]\nsubmission = "private"\n', ["[mev] submission"]),
    "boolean private": ("[mev]\nsubmission = true\n", ["[mev] submission", "boolean"]),
    "bad submission": ('[mev]\nsubmission = "dark"\n', ["[mev] submission", "dark"]),
    "zero max slippage": ("[mev]\nmax_slippage = 0\n", ["[mev] max_slippage"]),
    "max slippage of 100 %": ("[mev]\nmax_slippage = 1\n", ["[mev] max_slippage"]),
    "negative attacker cost": ("[mev]\nattacker_cost_usd = -1\n", ["[mev] attacker_cost_usd"]),
    "negative min hedge": ("[mev]\nmin_hedge_usd = -5\n", ["[mev] min_hedge_usd"]),
    "private fee of 100 %": ("[mev]\nprivate_fee_bps = 10000\n", ["[mev] private_fee_bps"]),
    "unknown mev key": ("[mev]\ndelay = 3\n", ["[mev] delay", "unknown key"]),
    # Settings that would make a run meaningless, refused like bad input (issue: each once ran
    # and printed nonsense: an unhedged "hedged" pool, an oracle frozen at its first price, a
    # one-hour return annualised into a 149 % NAV jump in a day, ...).
    "no hedge can fill under the fee": (
        '[slippage]\nmodel = "cpmm"\nfee_bps = 30\n[mev]\nmodel = "sandwich"\n'
        "max_slippage = 0.002\n",
        ["[mev] max_slippage", "30 bp", "no hedge could ever fill"],
    ),
    "an oracle that never prints": (
        '[oracle]\nmodel = "push"\nheartbeat = 0\ndeviation = 1.0\n',
        ["[oracle] deviation", "never prints"],
    ),
    "an oracle whose lag outlasts the data": (
        '[data]\nstart = "2022-07-01"\nend = "2022-07-03"\n[oracle]\nmodel = "push"\nlag = 200\n',
        ["[oracle]", "never prints after its first price"],
    ),
    "yield window under a day": ("[lp]\nyield_window_days = 0.5\n", ["[lp] yield_window_days"]),
    "withdrawal fee of 100 %": ("[lp]\nwithdrawal_fee = 1\n", ["[lp] withdrawal_fee"]),
    "a run rule that withdraws nothing": (
        "[lp]\nrun_drawdown = 0.05\n",
        ["[lp] run_fraction", "withdraws nothing"],
    ),
    "squeeze days without a start": (
        "[lending]\nshare = 0.5\nsqueeze_days = 3\n",
        ["[lending] squeeze_days", "needs squeeze_start"],
    ),
    "a breaker that halts for 0 hours": (
        "[pricing]\ncb_iv_move = 0.1\ncb_hours = 0\n",
        ["[pricing] cb_hours"],
    ),
    "liquidation below the fill cap": (
        '[pool]\ncollateral = "dynamic"\nmax_utilisation = 2\nliquidation_threshold = 1.5\n',
        ["[pool] liquidation_threshold", "below max_utilisation"],
    ),
    "a sale at price 0": ("[slippage]\nbps = 10000\n", ["[slippage] bps"]),
    "bad debt above 100 %": ("[lending]\nbad_debt_share = 1.5\n", ["[lending] bad_debt_share"]),
    "supply cap of 0": (
        "[lending]\nmax_supply_utilisation = 0\n",
        ["[lending] max_supply_utilisation"],
    ),
    "bad toml": ("[pool\n", ["not valid TOML"]),
    "bad interval": ('[hedge]\ninterval = "often"\n', ["[hedge] interval"]),
    "bad date": ('[data]\nstart = "yesterday"\n', ["[data] start"]),
    "empty window": ('[data]\nstart = "2030-01-01"\n', ["no ticks in the window"]),
    "end before start": ('[data]\nstart = "2023-01-02"\nend = "2023-01-01"\n', ["[data] end"]),
    "missing market": ('[data]\nmarket = "nowhere.parquet"\n', ["[data] market", "not found"]),
    "missing lp flows": ('[lp]\nflows = "nowhere.parquet"\n', ["[lp] flows", "not found"]),
    "missing surface": ('[data]\nsurface = "nowhere.parquet"\n', ["[data] surface", "not found"]),
}


@pytest.mark.parametrize("case", STRATEGY_CASES)
def test_bad_strategy_file(case, tmp_path):
    text, needles = STRATEGY_CASES[case]
    path = tmp_path / "bad.toml"
    path.write_text(text)
    out = tmp_path / "runs"
    code, output = run_cli("run", str(path), "--out", str(out), "--no-report")
    assert_one_line_error(code, output, *needles)
    assert not out.exists()


def test_bad_set_override(tmp_path):
    code, output = run_cli("run", "--set", "hedge.nope=1", "--out", str(tmp_path))
    assert_one_line_error(code, output, "hedge.nope", "unknown key")
    assert "did you mean" not in output  # nothing close: no guess


@pytest.mark.parametrize(
    ("key", "guess"), [("hedge.treshold", "threshold"), ("hedg.threshold", "hedge")]
)
def test_a_mistyped_set_key_suggests_the_closest(key, guess, tmp_path):
    code, output = run_cli("run", "--set", f"{key}=0.1", "--out", str(tmp_path))
    assert_one_line_error(code, output, key, f"unknown key; did you mean '{guess}'?")
    assert not tmp_path.joinpath("default").exists()


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_a_mistyped_strategy_name_suggests_the_closest(command, tmp_path):
    code, output = run_cli(command, "unhedgd", "--out", str(tmp_path / "runs"))
    assert_one_line_error(code, output, "unhedgd", "did you mean 'unhedged'?", "dhlp strategies")
    assert not (tmp_path / "runs").exists()


def test_missing_strategy_file(tmp_path):
    code, output = run_cli("run", str(tmp_path / "absent.toml"), "--out", str(tmp_path))
    assert_one_line_error(code, output, "absent.toml", "not found")


def test_folder_of_market_files_is_checked_across_files(market, tmp_path):
    folder = tmp_path / "market"
    folder.mkdir()
    write(market.head(12), folder / "a.parquet")
    write(
        market.head(12).with_columns(pl.col("ts") + dt.timedelta(minutes=30)), folder / "b.parquet"
    )
    code, output = run_cli("data", "validate", str(folder))
    assert_one_line_error(code, output, "column 'ts'")
