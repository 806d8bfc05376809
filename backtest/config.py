"""The strategy file: every key of docs/design.md, with defaults, ranges and one-line errors.

pydantic does the type and range checking (a hand-written validator for ~70 keys would be a second,
weaker copy of it); this module turns its errors into the project's one-line `InputError`.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from backtest.errors import InputError, did_you_mean

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
NonNeg = Annotated[float, Field(ge=0.0)]
Positive = Annotated[float, Field(gt=0.0)]

DURATION_UNITS = {"m": 60, "h": 3600, "d": 86400}


class StrictSection(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans(cls, value: Any) -> Any:
        """No key is a boolean, and pydantic would read `true` as 1.0."""
        if isinstance(value, bool):
            raise ValueError("expected a number or string, not a boolean")
        return value


class DataConfig(StrictSection):
    market: str = "data/eth_1h.parquet"
    flow: str = "synthetic"
    surface: str | None = None
    start: str | None = None
    end: str | None = None

    @field_validator("start", "end")
    @classmethod
    def _is_date(cls, value: str | None) -> str | None:
        if value is not None:
            parse_time(value)
        return value


class FlowConfig(StrictSection):
    seed: Annotated[int, Field(ge=0, lt=2**63)] = 7
    trades_per_day: Positive = 40.0
    iv_intensity: float = 1.0
    buy_fraction: Fraction = 0.65
    call_fraction: Fraction = 0.55
    size_median: Positive = 5.0
    size_sigma: NonNeg = 1.0
    expiries: list[Literal["daily", "weekly", "monthly"]] = Field(
        default_factory=lambda: ["daily", "weekly", "monthly"], min_length=1
    )
    max_tenor_days: Positive = 60.0
    strike_step: Positive = 50.0
    moneyness_sd: Positive = 0.08
    informed_fraction: Fraction = 0.0
    informed_horizon: Positive = 24.0
    # Price-elastic traders (synthetic and imported flow alike): 0 = every trader takes the price.
    elasticity: NonNeg = 0.0
    reference_spread_vol: Annotated[float, Field(ge=0.0, le=1.0)] = 0.01
    # Flow sized to the pool (docs/design.md): expected daily notional / NAV; 0 = sizes as given.
    notional_per_nav: NonNeg = 0.0
    # Stale-quote traders (needs [oracle] model = "push"): the share of rows that trade only
    # when the oracle is off the market by more than stale_edge, on the side that profits.
    stale_fraction: Fraction = 0.0
    stale_edge: NonNeg = 0.002


class PoolConfig(StrictSection):
    initial_capital: Positive = 10_000_000.0
    collateral: Literal["full", "dynamic"] = "full"
    max_utilisation: Annotated[float, Field(gt=0.0, le=10.0)] = 0.8
    stress_spot: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.3
    stress_vol: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.5
    margin_multiplier: Positive = 1.0
    liquidation_threshold: Positive = 1.0
    liquidation_penalty: Annotated[float, Field(ge=0.0, le=1.0)] = 0.02
    idle_yield: Annotated[float, Field(ge=-1.0, le=1.0)] = 0.0
    borrow_rate: Annotated[float, Field(ge=0.0, le=10.0)] = 0.0
    max_leverage: Annotated[float, Field(ge=1.0, allow_inf_nan=True)] = math.inf

    @field_validator("max_utilisation")
    @classmethod
    def _full_within_nav(cls, value: float, info: ValidationInfo) -> float:
        """Full collateral locks what it writes out of NAV: it cannot lock more than NAV."""
        if info.data.get("collateral") == "full" and value > 1.0:
            raise ValueError('full collateral cannot lock more than NAV: at most 1 when "full"')
        return value


class PricingConfig(StrictSection):
    rate: Annotated[float, Field(ge=-0.5, le=1.0)] = 0.0
    base_fee: NonNeg = 0.01
    spot_fee: NonNeg = 0.0005
    vega_fee: NonNeg = 0.0
    min_fee: NonNeg = 0.0
    skew_slope: float = 0.0
    smile_curvature: NonNeg = 0.0
    standard_size: Positive = 50.0
    iv_impact: NonNeg = 0.0
    skew_impact: NonNeg = 0.0
    impact_half_life: Positive = 24.0
    cb_iv_move: NonNeg = 0.0
    cb_hours: NonNeg = 12.0
    cb_min_free: NonNeg = 0.0
    # Vega limit: fills stop adding vega at |book vega| per vol point = max_vega x NAV; 0 = off.
    max_vega: NonNeg = 0.0


class HedgeConfig(StrictSection):
    policy: Literal["none", "every_trade", "threshold", "periodic", "whalley_wilmott"] = "threshold"
    threshold: NonNeg = 0.02
    interval: str = "8h"
    rebalance_to: Literal["zero", "edge"] = "zero"
    instrument: Literal["spot", "perp"] = "spot"
    hedge_cap: Annotated[float, Field(gt=0.0, allow_inf_nan=True)] = math.inf
    max_notional_per_step: Annotated[float, Field(gt=0.0, allow_inf_nan=True)] = math.inf
    latency: Annotated[int, Field(ge=0, le=1000)] = 0
    risk_aversion: Positive = 1.0
    borrow_fee: Annotated[float, Field(ge=0.0, le=10.0)] = 0.0

    @field_validator("interval")
    @classmethod
    def _is_duration(cls, value: str) -> str:
        parse_duration(value)
        return value


class SlippageConfig(StrictSection):
    model: Literal["none", "fixed_bps", "sqrt_impact", "cpmm"] = "fixed_bps"
    bps: Annotated[float, Field(ge=0.0, lt=10_000.0)] = 5.0  # 10,000 bp: a sale at price 0
    impact_coeff: NonNeg = 0.5
    adv_usd: Positive = 1.0e9
    liquidity_usd: Positive = 5.0e7
    fee_bps: Annotated[float, Field(ge=0.0, lt=10_000.0)] = 5.0
    gas_usd: NonNeg = 0.0
    mev_bps: NonNeg = 0.0
    mev_min_notional: NonNeg = 100_000.0
    # cpmm: hours for arbitrage to close half the venue's dislocation; 0 = re-anchored per trade.
    arb_half_life: Annotated[float, Field(ge=0.0, allow_inf_nan=True)] = 0.0


class MevConfig(StrictSection):
    """Who preys on the pool's hedges ("flat": [slippage] mev_bps, 0 by default), and the
    pool's defences (docs/design.md, "Sandwich attacks")."""

    model: Literal["none", "flat", "sandwich"] = "flat"
    submission: Literal["public", "private"] = "public"
    private_fee_bps: Annotated[float, Field(ge=0.0, lt=10_000.0)] = 0.0
    max_slippage: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.01
    attacker_cost_usd: NonNeg = 10.0
    min_hedge_usd: NonNeg = 0.0
    # Randomised hedge delay: each hedge fills a seeded 0..random_delay ticks after [hedge]
    # latency, so an attacker cannot count on it following the trade that caused it.
    random_delay: Annotated[int, Field(ge=0, le=1000)] = 0


class LpConfig(StrictSection):
    flows: str | None = None
    run_drawdown: Fraction = 0.0
    run_fraction: Fraction = 0.0
    withdrawal_delay: NonNeg = 0.0
    # A fee of 1 would keep every dollar a leaver is owed: nobody could ever leave.
    withdrawal_fee: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    benchmark_apy: Annotated[float, Field(gt=-1.0)] = 0.05
    deposit_elasticity: NonNeg = 0.0
    withdrawal_elasticity: NonNeg = 0.0
    # A window under a day annualises an hour's return (NAV 10 M -> 24.9 M in a day).
    yield_window_days: Annotated[float, Field(ge=1.0)] = 30.0


class VegaHedgeConfig(StrictSection):
    """Vega hedged with listed options (docs/design.md, "Vega hedging"). Vega per NAV is book
    vega per vol point (a 0.01 move in IV) as a share of NAV."""

    policy: Literal["none", "band", "tenor_matched"] = "none"
    band: Positive = 1e-4
    target: NonNeg = 0.0
    tenor_days: Positive = 30.0
    expiries: list[Literal["daily", "weekly", "monthly"]] = Field(
        default_factory=lambda: ["weekly", "monthly"], min_length=1
    )
    min_tenor_days: NonNeg = 7.0
    max_tenor_days: Positive = 90.0
    strike_step: Positive | None = None  # None: the flow's strike_step
    spread_vol: Annotated[float, Field(ge=0.0, le=0.5)] = 0.005
    fee_spot: Annotated[float, Field(ge=0.0, le=0.1)] = 0.0003
    fee_cap: Annotated[float, Field(ge=0.0, le=1.0)] = 0.125

    @field_validator("target")
    @classmethod
    def _within_band(cls, value: float, info: ValidationInfo) -> float:
        """A target outside the band would trade again at once."""
        band = info.data.get("band")
        if band is not None and value > band:
            raise ValueError(f"must not exceed band ({band})")
        return value

    @field_validator("max_tenor_days")
    @classmethod
    def _above_min(cls, value: float, info: ValidationInfo) -> float:
        low = info.data.get("min_tenor_days")
        if low is not None and value <= low:
            raise ValueError(f"must exceed min_tenor_days ({low})")
        return value


class LendingConfig(StrictSection):
    """Free cash supplied to a money market (docs/design.md, "Lent collateral"); share 0 = off."""

    share: Fraction = 0.0
    base_rate: Annotated[float, Field(ge=0.0, le=10.0)] = 0.0
    slope1: Annotated[float, Field(ge=0.0, le=10.0)] = 0.04
    kink: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.9
    slope2: Annotated[float, Field(ge=0.0, le=100.0)] = 0.6
    reserve_factor: Fraction = 0.1
    market_usd: Positive = 1.0e9  # the other suppliers' money: the market without the pool
    recall_share: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    # No new supply while the market's utilisation (the pool's supply in it) is this high.
    max_supply_utilisation: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    bad_debt_share: Fraction = 0.0  # of the lent cash, written off when a squeeze ends
    utilisation: str = "process"
    util_mean: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.8
    util_reversion: NonNeg = 1.0
    util_vol: NonNeg = 0.5
    squeeze_start: str | None = None
    squeeze_days: NonNeg = 0.0
    squeeze_utilisation: Fraction = 1.0

    @field_validator("squeeze_start")
    @classmethod
    def _is_date(cls, value: str | None) -> str | None:
        if value is not None:
            parse_time(value)
        return value

    @field_validator("utilisation")
    @classmethod
    def _source(cls, value: str) -> str:
        if not value.strip():
            raise ValueError('expected "process" or a Parquet path')
        return value


class OracleConfig(StrictSection):
    """The price feed the pool quotes and measures delta on (docs/design.md, "Oracle"): a push
    oracle publishes the market's price of `lag` hours ago whenever it has moved more than
    `deviation` from the last print, or `heartbeat` hours after it."""

    model: Literal["none", "push"] = "none"
    lag: NonNeg = 0.0
    deviation: NonNeg = 0.005
    heartbeat: NonNeg = 1.0


class Strategy(StrictSection):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")] = "default"
    description: str = ""
    data: DataConfig = Field(default_factory=DataConfig)
    flow: FlowConfig = Field(default_factory=FlowConfig)
    lp: LpConfig = Field(default_factory=LpConfig)
    pool: PoolConfig = Field(default_factory=PoolConfig)
    pricing: PricingConfig = Field(default_factory=PricingConfig)
    hedge: HedgeConfig = Field(default_factory=HedgeConfig)
    slippage: SlippageConfig = Field(default_factory=SlippageConfig)
    vega_hedge: VegaHedgeConfig = Field(default_factory=VegaHedgeConfig)
    lending: LendingConfig = Field(default_factory=LendingConfig)
    mev: MevConfig = Field(default_factory=MevConfig)
    oracle: OracleConfig = Field(default_factory=OracleConfig)


def parse_time(value: str) -> dt.datetime:
    """A UTC instant from an ISO date or date-time; naive values are UTC."""
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"not an ISO date/time: {value!r}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)


def parse_end(value: str) -> dt.datetime:
    """A date-only end means the whole of that day, so `end = 2023-06-30` includes June 30."""
    parsed = parse_time(value)
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
        parsed += dt.timedelta(days=1)
    return parsed


def parse_duration(value: str) -> int:
    """Seconds in a duration like '30m', '8h', '1d'."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([mhd])\s*", value)
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"not a positive duration like '8h', '30m' or '1d': {value!r}")
    return int(float(match.group(1)) * DURATION_UNITS[match.group(2)])


def _one_line(source: str, err: ValidationError) -> InputError:
    first = err.errors()[0]
    loc = [str(p) for p in first["loc"]]
    if len(loc) > 1 and loc[0] in Strategy.model_fields:
        key = f"[{loc[0]}] {'.'.join(loc[1:])}"
    else:
        key = ".".join(loc) or "(top level)"
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        section = Strategy.model_fields[loc[0]].annotation if len(loc) > 1 else Strategy
        message = "unknown key" + did_you_mean(loc[-1], section.model_fields)
    elif "input" in first and first["type"] not in ("missing",):
        message = f"{message} (got {first['input']!r})"
    return InputError(f"{source}: {key}: {message}")


def _cross_checks(strategy: Strategy, source: str) -> Strategy:
    """Keys that only mean something together with another section's."""
    slip, mev = strategy.slippage, strategy.mev
    if slip.arb_half_life > 0.0 and slip.model != "cpmm":
        raise InputError(
            f"{source}: [slippage] arb_half_life: only a cpmm venue remembers its price; "
            f'set model = "cpmm" or arb_half_life = 0 (got model = {slip.model!r})'
        )
    if mev.model == "sandwich" and slip.model != "cpmm":
        raise InputError(
            f'{source}: [mev] model: "sandwich" needs [slippage] model = "cpmm" '
            f"(got {slip.model!r})"
        )
    if mev.model == "sandwich" and slip.mev_bps > 0.0:
        raise InputError(
            f'{source}: [slippage] mev_bps: the flat MEV charge is [mev] model = "flat"; '
            f'with "sandwich" set it to 0 (got {slip.mev_bps!r})'
        )
    if mev.submission == "private" and mev.model != "sandwich":
        raise InputError(
            f'{source}: [mev] submission: "private" defends against [mev] model = "sandwich" '
            f"(got model = {mev.model!r})"
        )
    fee = slip.fee_bps * 1e-4
    if mev.model == "sandwich" and mev.max_slippage <= fee / (1.0 - fee):
        raise InputError(
            f"{source}: [mev] max_slippage: the venue's fee alone ({slip.fee_bps:g} bp) breaks "
            f"a tolerance of {mev.max_slippage:g}: no hedge could ever fill; set it above "
            f"{fee / (1.0 - fee):.6g}"
        )
    oracle = strategy.oracle
    if oracle.model == "push" and oracle.heartbeat == 0.0 and oracle.deviation >= 1.0:
        raise InputError(
            f"{source}: [oracle] deviation: with heartbeat = 0 a deviation of "
            f"{oracle.deviation:g} (>= 1) means the oracle never prints after its first price"
        )
    pool, pricing, lp, lend = strategy.pool, strategy.pricing, strategy.lp, strategy.lending
    if pool.collateral == "dynamic" and pool.liquidation_threshold < pool.max_utilisation:
        raise InputError(
            f"{source}: [pool] liquidation_threshold: below max_utilisation "
            f"({pool.max_utilisation:g}), every fill that uses the room would be liquidated "
            f"at once (got {pool.liquidation_threshold:g})"
        )
    if pricing.cb_hours == 0.0 and (pricing.cb_iv_move > 0.0 or pricing.cb_min_free > 0.0):
        raise InputError(
            f"{source}: [pricing] cb_hours: a circuit breaker that halts for 0 hours never "
            "halts anything; set cb_hours > 0 or turn cb_iv_move and cb_min_free off"
        )
    if lp.run_drawdown > 0.0 and lp.run_fraction == 0.0:
        raise InputError(
            f"{source}: [lp] run_fraction: a run rule that fires at every "
            f"{lp.run_drawdown:g} of drawdown but withdraws nothing; set run_fraction > 0 or "
            "run_drawdown = 0 (off)"
        )
    if lend.squeeze_start is None and lend.squeeze_days > 0.0:
        raise InputError(
            f"{source}: [lending] squeeze_days: a squeeze of {lend.squeeze_days:g} days needs "
            "squeeze_start (when it begins)"
        )
    if strategy.flow.stale_fraction > 0.0 and strategy.oracle.model == "none":
        raise InputError(
            f"{source}: [flow] stale_fraction: stale-quote traders trade against an oracle; "
            f'set [oracle] model = "push" (got stale_fraction = {strategy.flow.stale_fraction!r})'
        )
    return strategy


def build_strategy(raw: dict[str, Any], source: str = "strategy") -> Strategy:
    try:
        strategy = Strategy.model_validate(raw)
    except ValidationError as err:
        raise _one_line(source, err) from None
    return _cross_checks(strategy, source)


def load_strategy(path: str | Path) -> Strategy:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: strategy file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: not valid TOML: {exc}") from None
    raw.setdefault("name", path.stem)
    return build_strategy(raw, str(path))


def apply_overrides(strategy: Strategy, overrides: dict[str, Any], source: str) -> Strategy:
    """Return a copy with dotted keys ('hedge.threshold') replaced, validated like the file."""
    raw = strategy.model_dump()
    for dotted, value in overrides.items():
        *sections, name = dotted.split(".")
        target = raw
        for part in sections:
            if not isinstance(target.get(part), dict):
                known = [key for key, held in target.items() if isinstance(held, dict)]
                raise InputError(f"{source}: {dotted}: unknown key{did_you_mean(part, known)}")
            target = target[part]
        if name not in target:
            raise InputError(f"{source}: {dotted}: unknown key{did_you_mean(name, target)}")
        target[name] = value
    return build_strategy(raw, source)
