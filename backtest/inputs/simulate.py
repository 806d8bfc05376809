"""Simulated spot and implied-vol paths for Monte Carlo backtests (`dhlp data simulate`).

A pool's P&L hinges on how realised vol compares with the implied vol it sells at, and on how the
two move together. Each model makes one of those relations explicit:

- gbm: constant vol; implied vs realised is a single number (iv_premium).
- merton: jumps the hedger cannot trade through, priced at their average variance.
- heston: vol that wanders and mean-reverts, with implied following realised.
- bootstrap: a real history's joint spot/vol moves, reshuffled in blocks.

Every path draws from its own random streams, spawned from `seed`, in time order. So path k does not
depend on how many paths are drawn, and its first ticks do not depend on how many ticks follow: a
wider or longer run extends a smaller one instead of replacing it. Same seed, parameters and numpy
version give an identical frame.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import pyarrow.parquet as pq
from pydantic import Field, ValidationError, field_validator

from backtest import bundled
from backtest.config import StrictSection, parse_duration, parse_end, parse_time
from backtest.errors import InputError
from backtest.inputs.market import Market, load_market

YEAR_SECONDS = 365 * 86_400
MAX_NS = np.iinfo(np.int64).max  # the market loader holds ts as int64 nanoseconds
MARKET_SCHEMA = {
    "path_id": pl.Int64,
    "ts": pl.Datetime("us", "UTC"),
    "spot": pl.Float64,
    "iv": pl.Float64,
}
# pydantic's range error types, and the constraint each one reports.
_BOUNDS = {
    "greater_than": ("gt", ">"),
    "greater_than_equal": ("ge", ">="),
    "less_than": ("lt", "<"),
    "less_than_equal": ("le", "<="),
}
# Stream families: a path's draws of one kind never shift when another kind is added or resized.
DIFFUSION, JUMPS, BLOCKS = 0, 1, 2


class Gbm(StrictSection):
    """Geometric Brownian motion at constant vol; iv = sigma + iv_premium.

    The reference world: with iv_premium = 0 the pool sells at exactly the vol it will realise, so
    what it makes is fees minus hedging error and costs. A positive premium is the variance risk
    premium option sellers are paid on average.
    """

    spot0: float = Field(2000.0, gt=0.0, description="spot at the first tick")
    mu: float = Field(0.0, ge=-5.0, le=5.0, description="drift per year: E[S_T] = spot0 e^(mu T)")
    sigma: float = Field(0.65, gt=0.0, le=5.0, description="volatility per year")
    iv_premium: float = Field(
        0.0, ge=-5.0, le=5.0, description="added to the quoted iv: implied minus realised vol"
    )


class Merton(StrictSection):
    """Merton jump diffusion: GBM plus Poisson jumps of normal size in log spot.

    The drift is compensated, so E[S_T] = spot0 e^(mu T) whatever the jumps. iv is constant at the
    vol of the total log-return variance, sqrt(sigma^2 + jump_intensity (jump_mean^2 + jump_sd^2))
    (+ iv_premium): the vol at which realised variance equals implied on average. So iv_premium = 0
    is again a fair price on average, yet the pool loses on jump ticks and earns between them.
    """

    spot0: float = Field(2000.0, gt=0.0, description="spot at the first tick")
    mu: float = Field(0.0, ge=-5.0, le=5.0, description="drift per year: E[S_T] = spot0 e^(mu T)")
    sigma: float = Field(0.55, gt=0.0, le=5.0, description="diffusion volatility per year")
    jump_intensity: float = Field(
        12.0, ge=0.0, le=10_000.0, description="expected jumps per year (Poisson)"
    )
    jump_mean: float = Field(-0.02, ge=-2.0, le=2.0, description="mean of a jump in log spot")
    jump_sd: float = Field(0.06, ge=0.0, le=2.0, description="sd of a jump in log spot")
    iv_premium: float = Field(
        0.0, ge=-5.0, le=5.0, description="added to the quoted iv: implied minus realised vol"
    )


class Heston(StrictSection):
    """Heston stochastic variance; iv = sqrt(v) + iv_premium, so implied vol moves with realised.

    dv = kappa (theta - v) dt + xi sqrt(v) dW_v and d ln S = (mu - v/2) dt + sqrt(v) dW_S, with
    corr(dW_S, dW_v) = rho. Full-truncation Euler uses max(v, 0) in every coefficient, so v never
    drives spot while negative and is pulled back without the bias of reflecting it. The iv quoted
    at a tick is the vol that drives the next move: known then, so no look-ahead. iv_floor keeps the
    quote > 0 where v touches 0; spot still moves with max(v, 0).
    """

    spot0: float = Field(2000.0, gt=0.0, description="spot at the first tick")
    mu: float = Field(0.0, ge=-5.0, le=5.0, description="drift per year: E[S_T] = spot0 e^(mu T)")
    v0: float = Field(0.4225, gt=0.0, le=25.0, description="variance at the first tick (vol^2)")
    kappa: float = Field(5.0, gt=0.0, le=1000.0, description="mean-reversion speed per year")
    theta: float = Field(0.4225, gt=0.0, le=25.0, description="long-run variance (vol^2)")
    xi: float = Field(1.0, gt=0.0, le=20.0, description="vol of variance")
    rho: float = Field(-0.3, ge=-1.0, le=1.0, description="correlation of spot and variance moves")
    iv_premium: float = Field(
        0.0, ge=-5.0, le=5.0, description="added to the quoted iv: implied minus realised vol"
    )
    iv_floor: float = Field(0.01, gt=0.0, le=1.0, description="lowest quoted iv")


class Bootstrap(StrictSection):
    """Block bootstrap of a real history: (log return, iv log change) pairs resampled together.

    A path is glued from blocks of consecutive history ticks. Inside a block the spot-vol
    correlation, fat tails and vol clustering are the history's own. Blocks are independent, so
    clustering longer than a block is lost, and so is iv's mean reversion across blocks: between
    blocks iv is a random walk. Keep blocks long or paths short if iv's spread matters. Returns
    carry the history's drift. `fixed` blocks are block_length ticks; `geometric` blocks have
    geometric lengths with mean block_length (Politis-Romano stationary bootstrap), which keeps
    the series stationary. A block never spans a gap in the history (ticks further apart than its
    usual spacing) or a path boundary: it ends there, and a new block starts. The step is the
    history's spacing.
    """

    history: str = Field(
        "data/eth_1h.parquet",
        description="market file or folder to resample (a relative path not found in the working"
        " directory is looked up among the bundled data)",
    )
    history_start: str | None = Field(None, description="use history from this date (ISO)")
    history_end: str | None = Field(None, description="use history up to this date (ISO)")
    block: Literal["fixed", "geometric"] = Field("geometric", description="block length rule")
    block_length: int = Field(
        24, ge=1, le=1_000_000, description="ticks per block (mean, if geometric)"
    )
    spot0: float | None = Field(
        None, gt=0.0, description="spot at the first tick (default: the history's first)"
    )
    iv0: float | None = Field(
        None, gt=0.0, description="iv at the first tick (default: the history's first)"
    )

    @field_validator("history_start", "history_end", mode="before")
    @classmethod
    def _date_as_text(cls, value: Any) -> Any:
        """`--set history_start=2022-01-01` arrives as a TOML date, not a string."""
        return value.isoformat() if isinstance(value, dt.date) else value


MODELS: dict[str, type[StrictSection]] = {
    "gbm": Gbm,
    "merton": Merton,
    "heston": Heston,
    "bootstrap": Bootstrap,
}


def simulate(
    model: str,
    n_paths: int,
    n_ticks: int,
    step: str | None = None,
    start: str = "2024-01-01",
    seed: int = 0,
    **params: Any,
) -> pl.DataFrame:
    """Market paths from `model`, stacked by path_id: columns path_id, ts, spot, iv.

    `n_ticks` counts every row of a path, the starting tick included. `step` is a duration like
    '1h' (default '1h'); bootstrap steps at the history's spacing and refuses any other. `params`
    are the model's parameters (see MODELS and help_text()).
    """
    if model not in MODELS:
        raise InputError(f"simulate: model: unknown model {model!r} (known: {', '.join(MODELS)})")
    _check_int("n_paths", n_paths, 1)
    _check_int("n_ticks", n_ticks, 2)
    _check_int("seed", seed, 0)
    p = _params(model, params)
    try:
        first = parse_time(start)
    except ValueError as exc:
        raise InputError(f"simulate: start: {exc}") from None
    n_steps = n_ticks - 1
    if isinstance(p, Bootstrap):
        history = _History.load(p)
        step_s = history.spacing_s
        if step is not None and _duration(step) != step_s:
            raise InputError(
                f"simulate: step: bootstrap steps at the history's spacing of {step_s} s, "
                f"not {step!r}"
            )
    else:
        step_s = _duration("1h" if step is None else step)
    start_us = int(first.timestamp()) * 1_000_000 + first.microsecond
    if (start_us + n_steps * step_s * 1_000_000) * 1_000 > MAX_NS:
        raise InputError("simulate: n_ticks: the paths would run past the year 2262")
    if isinstance(p, Bootstrap):
        spot, iv = _bootstrap(p, history, n_paths, n_steps, seed)
    else:
        generate = {"gbm": _gbm, "merton": _merton, "heston": _heston}[model]
        spot, iv = generate(p, n_paths, n_steps, step_s / YEAR_SECONDS, seed)
    for name, values in (("spot", spot), ("iv", np.asarray(iv))):
        if not (np.isfinite(values).all() and (values > 0).all()):
            raise InputError(
                f"simulate: {model}: the parameters drive {name} to 0 or infinity on some path"
            )
    ts_us = start_us + np.arange(n_ticks, dtype=np.int64) * (step_s * 1_000_000)
    return pl.DataFrame(
        {
            "path_id": np.repeat(np.arange(n_paths, dtype=np.int64), n_ticks),
            "ts": np.tile(ts_us, n_paths),
            "spot": spot.T.ravel(),
            "iv": np.broadcast_to(iv, spot.shape).T.ravel(),
        },
        schema=MARKET_SCHEMA,
    )


def write_paths(
    frame: pl.DataFrame, path: str | Path, settings: dict[str, Any] | None = None
) -> Path:
    """Write a market Parquet; `settings` go into its schema metadata as JSON under 'simulation'.

    Written to a temporary file and renamed, so an interrupted write never leaves a partial file
    that a later backtest would load as if it were complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = frame.to_arrow()
    if settings is not None:
        metadata = dict(table.schema.metadata or {})
        metadata[b"simulation"] = json.dumps(settings, sort_keys=True).encode()
        table = table.replace_schema_metadata(metadata)
    partial = path.with_name(path.name + ".partial")
    pq.write_table(table, partial, compression="zstd")
    os.replace(partial, path)
    return path


def help_text() -> str:
    """Every model's summary and parameters with defaults and ranges, for CLI help and README."""
    lines = []
    for name, cls in MODELS.items():
        lines.append(f"{name}: {(cls.__doc__ or '').splitlines()[0]}")
        for key, field in cls.model_fields.items():
            limits = [
                f"{op} {getattr(m, attr):g}"
                for m in field.metadata
                for attr, op in _BOUNDS.values()
                if getattr(m, attr, None) is not None
            ]
            bounds = f" [{', '.join(limits)}]" if limits else ""
            lines.append(f"  {key} = {field.default!r}: {field.description}{bounds}")
    return "\n".join(lines)


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise InputError(f"simulate: {name}: must be an integer >= {minimum} (got {value!r})")


def _duration(step: str) -> int:
    try:
        return parse_duration(step)
    except ValueError as exc:
        raise InputError(f"simulate: step: {exc}") from None


def _params(model: str, raw: dict[str, Any]) -> StrictSection:
    """The model's validated parameters; the first problem becomes `simulate: model.key: ...`."""
    cls = MODELS[model]
    try:
        return cls.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(part) for part in first["loc"] if not isinstance(part, int))
        if first["type"] == "extra_forbidden":
            problem = f"unknown parameter (known: {', '.join(cls.model_fields)})"
        elif first["type"] in _BOUNDS:
            attr, op = _BOUNDS[first["type"]]
            problem = f"must be {op} {first['ctx'][attr]:g} (got {first['input']!r})"
        else:
            problem = f"{first['msg']} (got {first['input']!r})"
        raise InputError(f"simulate: {model}.{key}: {problem}") from None


def _draws(
    seed: int, kind: int, n_paths: int, draw: Callable[[np.random.Generator], np.ndarray]
) -> np.ndarray:
    """`draw` on each path's own stream of this kind, stacked on a last axis of paths."""
    children = np.random.SeedSequence(seed, spawn_key=(kind,)).spawn(n_paths)
    return np.stack([draw(np.random.Generator(np.random.PCG64(c))) for c in children], axis=-1)


def _levels(first: float | np.ndarray, log_changes: np.ndarray) -> np.ndarray:
    """Levels (n_steps + 1, n_paths) from log changes (n_steps, n_paths), in one new array."""
    out = np.empty((log_changes.shape[0] + 1, log_changes.shape[1]))
    out[0] = 0.0
    np.cumsum(log_changes, axis=0, out=out[1:])
    np.exp(out, out=out)
    out *= first
    return out


def _positive_iv(model: str, base: float, premium: float) -> float:
    if base + premium <= 0:
        raise InputError(
            f"simulate: {model}.iv_premium: makes iv {base + premium:g}, must keep it > 0"
        )
    return base + premium


def _gbm(p: Gbm, n_paths: int, n_steps: int, dt: float, seed: int) -> tuple[np.ndarray, float]:
    iv = _positive_iv("gbm", p.sigma, p.iv_premium)
    z = _draws(seed, DIFFUSION, n_paths, lambda rng: rng.standard_normal(n_steps))
    log_returns = (p.mu - 0.5 * p.sigma**2) * dt + p.sigma * math.sqrt(dt) * z
    return _levels(p.spot0, log_returns), iv


def _merton(
    p: Merton, n_paths: int, n_steps: int, dt: float, seed: int
) -> tuple[np.ndarray, float]:
    jump_variance = p.jump_intensity * (p.jump_mean**2 + p.jump_sd**2)
    iv = _positive_iv("merton", math.sqrt(p.sigma**2 + jump_variance), p.iv_premium)
    z = _draws(seed, DIFFUSION, n_paths, lambda rng: rng.standard_normal((n_steps, 2)))
    jumps = _draws(seed, JUMPS, n_paths, lambda rng: rng.poisson(p.jump_intensity * dt, n_steps))
    compensator = p.jump_intensity * math.expm1(p.jump_mean + 0.5 * p.jump_sd**2)
    drift = (p.mu - 0.5 * p.sigma**2 - compensator) * dt
    # The sum of n normal jumps is normal(n mean, n sd^2): one draw per tick, however many jumps.
    log_returns = (
        drift
        + p.sigma * math.sqrt(dt) * z[:, 0]
        + jumps * p.jump_mean
        + np.sqrt(jumps) * p.jump_sd * z[:, 1]
    )
    return _levels(p.spot0, log_returns), iv


def _heston(
    p: Heston, n_paths: int, n_steps: int, dt: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    z = _draws(seed, DIFFUSION, n_paths, lambda rng: rng.standard_normal((n_steps, 2)))
    v = np.empty((n_steps + 1, n_paths))
    v[0] = p.v0
    log_returns = np.empty((n_steps, n_paths))
    independent = math.sqrt(1.0 - p.rho**2)
    for t in range(n_steps):
        v_plus = np.maximum(v[t], 0.0)
        shock = np.sqrt(v_plus * dt)
        log_returns[t] = (p.mu - 0.5 * v_plus) * dt + shock * (
            p.rho * z[t, 1] + independent * z[t, 0]
        )
        v[t + 1] = v[t] + p.kappa * (p.theta - v_plus) * dt + p.xi * shock * z[t, 1]
    iv = np.maximum(np.sqrt(np.maximum(v, 0.0)) + p.iv_premium, p.iv_floor)
    return _levels(p.spot0, log_returns), iv


class _History:
    """A history's one-tick (log return, iv log change) pairs and which of them may be resampled."""

    def __init__(self, market: Market, source: str) -> None:
        dt = np.diff(market.ts)
        within_path = np.ones(dt.size, dtype=bool)
        within_path[market.offsets[1:-1] - 1] = False  # the step from one path into the next
        steps, counts = np.unique(dt[within_path], return_counts=True)
        spacing_ns = int(steps[np.argmax(counts)])
        if spacing_ns % 1_000_000_000:
            raise InputError(f"{source}: bootstrap needs a spacing of whole seconds")
        self.spacing_s = spacing_ns // 1_000_000_000
        self.log_returns = np.diff(np.log(market.spot))
        self.iv_log_changes = np.diff(np.log(market.iv))
        self.usable = within_path & (dt == spacing_ns)
        self.usable_index = np.flatnonzero(self.usable)
        # A block may go on from return i only if return i + 1 is usable (same path, no gap).
        self.continues = np.append(self.usable[1:], False)
        self.spot0 = float(market.spot[0])
        self.iv0 = float(market.iv[0])

    @classmethod
    def load(cls, p: Bootstrap) -> _History:
        window = []
        for key, parse in (("history_start", parse_time), ("history_end", parse_end)):
            value = getattr(p, key)
            try:
                window.append(None if value is None else parse(value))
            except ValueError as exc:
                raise InputError(f"simulate: bootstrap.{key}: {exc}") from None
        try:
            return cls(load_market(bundled.data_file(p.history), *window), p.history)
        except InputError as exc:
            raise InputError(f"simulate: bootstrap.history: {exc}") from None


def _bootstrap(
    p: Bootstrap, history: _History, n_paths: int, n_steps: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    # Per tick: a uniform that may end the block (geometric), a uniform that picks a new start.
    u = _draws(seed, BLOCKS, n_paths, lambda rng: rng.random((n_steps, 2)))
    starts = history.usable_index[(u[:, 1] * history.usable_index.size).astype(np.int64)]
    index = np.empty((n_steps, n_paths), dtype=np.int64)
    index[0] = starts[0]
    age = np.ones(n_paths, dtype=np.int64)  # ticks taken from the current block
    for t in range(1, n_steps):
        previous = index[t - 1]
        new = age >= p.block_length if p.block == "fixed" else u[t, 0] < 1.0 / p.block_length
        new |= ~history.continues[previous]
        index[t] = np.where(new, starts[t], previous + 1)
        age = np.where(new, 1, age + 1)
    spot0 = history.spot0 if p.spot0 is None else p.spot0
    iv0 = history.iv0 if p.iv0 is None else p.iv0
    return _levels(spot0, history.log_returns[index]), _levels(iv0, history.iv_log_changes[index])
