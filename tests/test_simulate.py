"""Simulated market paths: each model's moments, the bootstrap's fidelity to its history, seeds."""

import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from backtest.errors import InputError
from backtest.inputs.market import load_market, market_from_frames, validate_market
from backtest.inputs.simulate import MARKET_SCHEMA, MODELS, help_text, simulate, write_paths

DATA = Path(__file__).resolve().parents[1] / "data"
ETH = str(DATA / "eth_1h.parquet")
GRID = 2e-6  # spacing of the synthetic history's returns and iv changes


def grid(frame: pl.DataFrame, n_paths: int, column: str) -> np.ndarray:
    return frame[column].to_numpy().reshape(n_paths, -1)


def log_changes(frame: pl.DataFrame, n_paths: int, column: str) -> np.ndarray:
    return np.diff(np.log(grid(frame, n_paths, column)), axis=1)


def within(observed: float, expected: float, se: float, k: float = 4.0) -> bool:
    return abs(observed - expected) <= k * se


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """Two paths of hourly ticks with a 3 h gap, whose returns and iv changes are distinct values
    on a grid, so every simulated tick can be traced back to the history tick it came from.

    Returns the file and, per history return index, (log return, iv log change, usable).
    """
    rng = np.random.default_rng(11)
    lengths, gap_after = (3000, 2000), 1500
    n_returns = sum(n - 1 for n in lengths)
    r = (rng.permutation(n_returns) - n_returns / 2) * GRID
    d = (rng.permutation(n_returns) - n_returns / 2) * GRID
    frames, used = [], 0
    for path_id, n in enumerate(lengths):
        hours = np.arange(n) + (np.arange(n) > gap_after) * 2 * (path_id == 0)
        level = 1000.0 * 3**path_id  # the step between paths is far off the grid
        steps = slice(used, used + n - 1)
        frames.append(
            pl.DataFrame(
                {
                    "path_id": np.full(n, path_id),
                    "ts": pl.Series(np.datetime64("2023-01-01", "us") + hours * 3_600_000_000),
                    "spot": level * np.exp(np.concatenate(([0.0], np.cumsum(r[steps])))),
                    "iv": 0.6 * np.exp(np.concatenate(([0.0], np.cumsum(d[steps])))),
                }
            ).with_columns(pl.col("ts").dt.replace_time_zone("UTC"))
        )
        used += n - 1
    path = tmp_path_factory.mktemp("history") / "history.parquet"
    pl.concat(frames).write_parquet(path)
    # History return index i is the move from concatenated row i to row i + 1.
    all_r = np.diff(np.log(pl.concat(frames)["spot"].to_numpy()))
    all_d = np.diff(np.log(pl.concat(frames)["iv"].to_numpy()))
    usable = np.ones(all_r.size, dtype=bool)
    usable[gap_after] = False  # the 3 h step
    usable[lengths[0] - 1] = False  # path 0 into path 1
    return path, all_r, all_d, usable


def trace(frame: pl.DataFrame, n_paths: int, all_r: np.ndarray, all_d: np.ndarray) -> np.ndarray:
    """The history return index of every simulated step, checking the pair matches exactly."""
    r = log_changes(frame, n_paths, "spot")
    d = log_changes(frame, n_paths, "iv")
    order = np.argsort(all_r)
    pos = np.clip(np.searchsorted(all_r[order], r), 1, all_r.size - 1)
    nearer = np.where(
        np.abs(all_r[order][pos - 1] - r) < np.abs(all_r[order][pos] - r), pos - 1, pos
    )
    index = order[nearer]
    assert np.abs(all_r[index] - r).max() < 1e-9, "a return that is not one of the history's"
    assert np.abs(all_d[index] - d).max() < 1e-9, "an iv change not paired with its return"
    return index


# --- every model: shape, engine compatibility, seeds ---------------------------------------------

SMALL = {
    "gbm": {},
    "merton": {},
    "heston": {},
    "bootstrap": {"history": ETH},
}


@pytest.mark.parametrize("model", MODELS)
def test_frame_is_a_market_the_engine_loads(model):
    frame = simulate(model, n_paths=3, n_ticks=50, seed=1, **SMALL[model])
    assert frame.schema == pl.Schema(MARKET_SCHEMA)
    assert frame.height == 150
    assert frame["path_id"].to_list() == [k for k in range(3) for _ in range(50)]
    ts = grid(frame.with_columns(pl.col("ts").dt.epoch("us")), 3, "ts")
    assert (np.diff(ts, axis=1) == 3_600 * 10**6).all()
    assert ts[0, 0] == 1_704_067_200 * 10**6  # 2024-01-01 00:00 UTC
    for column in ("spot", "iv"):
        values = frame[column].to_numpy()
        assert np.isfinite(values).all() and (values > 0).all()
    market = market_from_frames([validate_market(frame, "sim", 0.0)], "sim")
    assert market.n_paths == 3 and list(np.diff(market.offsets)) == [50, 50, 50]


@pytest.mark.parametrize("model", MODELS)
def test_same_seed_same_frame_other_seed_other_frame(model):
    params = SMALL[model]
    a = simulate(model, 4, 100, seed=5, **params)
    assert a.equals(simulate(model, 4, 100, seed=5, **params))
    assert not a["spot"].equals(simulate(model, 4, 100, seed=6, **params)["spot"])


@pytest.mark.parametrize("model", MODELS)
def test_wider_or_longer_runs_extend_smaller_ones(model):
    """Path k and its first ticks do not depend on how many paths or ticks are drawn."""
    params = SMALL[model]
    small = simulate(model, 3, 40, seed=9, **params)
    wide = simulate(model, 7, 40, seed=9, **params)
    long = simulate(model, 3, 90, seed=9, **params)
    assert small.equals(wide.filter(pl.col("path_id") < 3))
    assert small.equals(long.filter(pl.col("ts") < small["ts"].max() + pl.duration(hours=1)))


def test_step_and_start():
    frame = simulate("gbm", 1, 3, step="30m", start="2023-06-30T12:00:00+02:00")
    assert frame["ts"].dt.strftime("%Y-%m-%d %H:%M").to_list() == [
        "2023-06-30 10:00",
        "2023-06-30 10:30",
        "2023-06-30 11:00",
    ]


def test_write_paths_round_trip(tmp_path):
    frame = simulate("heston", 2, 24, seed=3)
    out = write_paths(frame, tmp_path / "sub" / "paths.parquet", {"model": "heston", "seed": 3})
    assert sorted(p.name for p in out.parent.iterdir()) == ["paths.parquet"]
    metadata = pq.read_schema(out).metadata
    assert json.loads(metadata[b"simulation"]) == {"model": "heston", "seed": 3}
    market = load_market(out)
    assert market.n_paths == 2
    np.testing.assert_array_equal(market.spot, frame["spot"].to_numpy())


# --- model moments --------------------------------------------------------------------------------


def test_gbm_log_return_moments_and_iv():
    mu, sigma, dt = 0.3, 0.8, 1 / 365
    frame = simulate("gbm", 400, 366, step="1d", seed=2, mu=mu, sigma=sigma, iv_premium=0.05)
    r = log_changes(frame, 400, "spot").ravel()
    var = sigma**2 * dt
    assert within(r.mean(), (mu - 0.5 * sigma**2) * dt, math.sqrt(var / r.size))
    assert within(r.var(), var, var * math.sqrt(2 / r.size))
    assert (frame["iv"] == sigma + 0.05).all()


def test_merton_jump_frequency_variance_and_compensated_drift():
    lam, m, s, sigma, mu, dt = 50.0, 0.1, 0.02, 0.01, 0.2, 1 / 365
    frame = simulate(
        "merton",
        500,
        366,
        step="1d",
        seed=4,
        mu=mu,
        sigma=sigma,
        jump_intensity=lam,
        jump_mean=m,
        jump_sd=s,
    )
    r = log_changes(frame, 500, "spot")
    # Ticks without a jump sit at the drift (-0.014, sd 0.0005); a jump (0.1 +- 0.02) lifts them
    # far above 0.01, so counting ticks above it counts ticks with at least one jump.
    jumped = (r.ravel() > 0.01).mean()
    p = -math.expm1(-lam * dt)
    assert within(jumped, p, math.sqrt(p * (1 - p) / r.size))
    # Compound Poisson variance is lam dt E[J^2]; iv quotes the total.
    total = sigma**2 + lam * (m**2 + s**2)
    centred = r.ravel() - r.mean()
    se = math.sqrt(((centred**4).mean() - centred.var() ** 2) / r.size)
    assert within(centred.var(), total * dt, se)
    assert np.allclose(frame["iv"].to_numpy(), math.sqrt(total))
    # The compensator keeps E[S_T] = S0 e^(mu T) despite the upward jumps.
    growth = grid(frame, 500, "spot")[:, -1] / 2000.0
    assert within(growth.mean(), math.exp(mu * 365 * dt), growth.std() / math.sqrt(growth.size))


def test_heston_variance_reverts_to_theta_and_spot_vol_correlation_is_rho():
    v0, theta, kappa, rho, dt = 0.04, 0.5, 4.0, -0.7, 0.25 / 365
    frame = simulate(
        "heston",
        1000,
        731,
        step="6h",
        seed=3,
        v0=v0,
        theta=theta,
        kappa=kappa,
        xi=0.5,
        rho=rho,
    )
    v = grid(frame, 1000, "iv") ** 2
    for tick in (146, 365, 730):
        expected = theta + (v0 - theta) * math.exp(-kappa * tick * dt)
        se = v[:, tick].std() / math.sqrt(1000)
        assert within(v[:, tick].mean(), expected, se)
    r = log_changes(frame, 1000, "spot")
    assert abs(np.corrcoef(r.ravel(), np.diff(v, axis=1).ravel())[0, 1] - rho) < 0.01
    # Implied moves with realised: paths that quote high vol realise high vol.
    realised = (r**2).sum(axis=1) / (730 * dt)
    assert np.corrcoef(realised, v[:, :-1].mean(axis=1))[0, 1] > 0.9


def test_heston_iv_premium_and_floor():
    params = {"xi": 3.0, "kappa": 1.0, "theta": 0.01, "v0": 0.01}  # far from Feller: v hits 0
    base = simulate("heston", 50, 200, seed=1, **params)["iv"].to_numpy()
    shifted = simulate("heston", 50, 200, seed=1, iv_premium=0.1, **params)["iv"].to_numpy()
    assert base.min() == 0.01  # the quote floors where v is 0
    above = base > 0.01
    np.testing.assert_allclose(shifted[above], base[above] + 0.1)
    np.testing.assert_allclose(shifted[~above].min(), 0.1)


# --- bootstrap ------------------------------------------------------------------------------------


def test_bootstrap_draws_joint_pairs_from_usable_history(history):
    path, all_r, all_d, usable = history
    frame = simulate("bootstrap", 50, 300, seed=1, history=str(path), block_length=10)
    index = trace(frame, 50, all_r, all_d)
    assert usable[index].all(), "a block crossed a gap or a path boundary"
    first = frame.filter(pl.col("ts") == pl.col("ts").min())
    assert (first["spot"] == 1000.0).all() and (first["iv"] == 0.6).all()


def test_bootstrap_fixed_blocks_follow_the_history(history):
    path, all_r, all_d, usable = history
    length = 7
    frame = simulate(
        "bootstrap", 40, 500, seed=2, history=str(path), block="fixed", block_length=length
    )
    index = trace(frame, 40, all_r, all_d)
    continues = np.append(usable[1:], False)
    restarts = 0
    for row in index:
        age = 1
        for prev, cur in zip(row[:-1], row[1:], strict=True):
            if age < length and continues[prev]:
                assert cur == prev + 1
                age += 1
            else:
                restarts += age < length  # cut short by a gap or the end of a path
                age = 1
    assert restarts > 0  # the gap and path ends were met and respected


def test_bootstrap_geometric_blocks_have_the_mean_length(history):
    path, all_r, all_d, _ = history
    length = 12
    frame = simulate("bootstrap", 200, 400, seed=3, history=str(path), block_length=length)
    index = trace(frame, 200, all_r, all_d)
    went_on = (np.diff(index, axis=1) == 1).mean()
    # A block ends with probability 1/length per tick, or at one of 3 history ends in ~5,000.
    expected = (1 - 1 / length) * (1 - 3 / all_r.size)
    assert within(went_on, expected, math.sqrt(expected * (1 - expected) / index.size), k=5.0)


def test_bootstrap_keeps_the_real_spot_vol_correlation():
    market = load_market(ETH)
    r_hist, d_hist = np.diff(np.log(market.spot)), np.diff(np.log(market.iv))
    frame = simulate("bootstrap", 200, 500, seed=4, history=ETH, spot0=3000.0, iv0=0.7)
    r, d = log_changes(frame, 200, "spot"), log_changes(frame, 200, "iv")
    corr_hist = np.corrcoef(r_hist, d_hist)[0, 1]
    assert corr_hist < -0.1  # ETH vol rises when spot falls
    assert abs(np.corrcoef(r.ravel(), d.ravel())[0, 1] - corr_hist) < 0.05
    assert (grid(frame, 200, "spot")[:, 0] == 3000.0).all()
    assert (grid(frame, 200, "iv")[:, 0] == 0.7).all()
    known = np.sort(r_hist)
    pos = np.clip(np.searchsorted(known, r.ravel()), 1, known.size - 1)
    nearest = np.minimum(np.abs(known[pos] - r.ravel()), np.abs(known[pos - 1] - r.ravel()))
    assert nearest.max() < 1e-9


def test_bootstrap_history_window_accepts_toml_dates():
    """`--set history_start=2023-03-01` is parsed as TOML, so the value is a date, not a string."""
    window = {"history_start": dt.date(2023, 3, 1), "history_end": "2023-03-01"}
    frame = simulate("bootstrap", 1, 2, history=ETH, **window)
    first = load_market(ETH, dt.datetime(2023, 3, 1, tzinfo=dt.UTC))
    assert frame["spot"][0] == first.spot[0] and frame["iv"][0] == first.iv[0]


def test_bootstrap_steps_at_the_history_spacing():
    daily = simulate("bootstrap", 1, 3, history=str(DATA / "eth_1d.parquet"))
    assert daily["ts"].diff().drop_nulls().dt.total_hours().to_list() == [24, 24]
    with pytest.raises(InputError, match="simulate: step: bootstrap steps at the history's"):
        simulate("bootstrap", 1, 3, step="1h", history=str(DATA / "eth_1d.parquet"))


# --- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "kwargs", "message"),
    [
        ("heston", {"xi": 0.0}, "simulate: heston.xi: must be > 0"),
        ("heston", {"rho": 1.5}, "simulate: heston.rho: must be <= 1"),
        ("gbm", {"sigma": -0.1}, "simulate: gbm.sigma: must be > 0"),
        ("gbm", {"sigma": 0.2, "iv_premium": -0.3}, "simulate: gbm.iv_premium:"),
        ("gbm", {"vol": 0.2}, "simulate: gbm.vol: unknown parameter"),
        ("gbm", {"sigma": True}, "simulate: gbm.sigma:"),
        ("gbm", {"mu": float("nan")}, "simulate: gbm.mu:"),
        ("merton", {"jump_intensity": -1}, "simulate: merton.jump_intensity: must be >= 0"),
        ("merton", {"jump_sd": "x"}, "simulate: merton.jump_sd:"),
        ("bootstrap", {"block": "circular"}, "simulate: bootstrap.block:"),
        ("bootstrap", {"block_length": 0}, "simulate: bootstrap.block_length: must be >= 1"),
        ("bootstrap", {"iv0": 0}, "simulate: bootstrap.iv0: must be > 0"),
        ("bootstrap", {"history": "missing.parquet"}, "simulate: bootstrap.history: missing"),
        ("bootstrap", {"history_start": "soon"}, "simulate: bootstrap.history_start:"),
        ("bootstrap", {"history": ETH, "history_start": "2030-01-01"}, "bootstrap.history:"),
        ("garch", {}, "simulate: model: unknown model 'garch'"),
        ("gbm", {"n_paths": 0}, "simulate: n_paths: must be an integer >= 1"),
        ("gbm", {"n_ticks": 1}, "simulate: n_ticks: must be an integer >= 2"),
        ("gbm", {"n_ticks": 10**9, "step": "1d"}, "simulate: n_ticks: .* past the year 2262"),
        ("gbm", {"seed": -1}, "simulate: seed:"),
        ("gbm", {"step": "1w"}, "simulate: step:"),
        ("gbm", {"start": "yesterday"}, "simulate: start:"),
        (
            "merton",
            {"jump_intensity": 10_000, "jump_mean": 2.0, "n_ticks": 300},
            "simulate: merton: the parameters drive spot to 0",
        ),
    ],
)
def test_bad_parameters_raise_naming_them(model, kwargs, message):
    kwargs = {"n_paths": 2, "n_ticks": 10} | kwargs
    with pytest.raises(InputError, match=message):
        simulate(model, **kwargs)


def test_help_names_every_parameter():
    text = help_text()
    for name, cls in MODELS.items():
        assert f"{name}: " in text
        for key in cls.model_fields:
            assert f"  {key} = " in text
