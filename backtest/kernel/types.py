"""Every record dtype the kernel writes, the integer codes of model variants, and the parameters.

One place for these so the kernel, the results layer and the tests agree on names and codes.
"""

from typing import NamedTuple

import numpy as np

# Model variants, as the integer codes the kernel branches on.
POLICY = {"none": 0, "every_trade": 1, "threshold": 2, "periodic": 3, "whalley_wilmott": 4}
SLIPPAGE = {"none": 0, "fixed_bps": 1, "sqrt_impact": 2, "cpmm": 3}
COLLATERAL = {"full": 0, "dynamic": 1}
INSTRUMENT = {"spot": 0, "perp": 1}
REBALANCE = {"zero": 0, "edge": 1}

# Why a flow row was not (fully) filled.
REJECT_REASONS = ("", "utilisation", "insolvent", "circuit_breaker")
REJECT_NONE, REJECT_UTILISATION, REJECT_INSOLVENT, REJECT_HALTED = range(4)

# Why a hedge traded: the policy that decided it (codes shared with POLICY), or a liquidation.
LIQUIDATION = len(POLICY)
HEDGE_REASONS = {code: name for name, code in POLICY.items()} | {LIQUIDATION: "liquidation"}

# PnL components, in the order of the steps record; their sum is pnl_total.
PNL_COMPONENTS = (
    "pnl_delta",
    "pnl_gamma",
    "pnl_vega",
    "pnl_theta",
    "pnl_vanna",
    "pnl_volga",
    "pnl_residual",
    "pnl_fees",
    "pnl_hedge_cost",
    "pnl_funding",
    "pnl_interest",
    "pnl_liquidation",
)
# The option-book part of the attribution, kept per series as well.
SERIES_COMPONENTS = PNL_COMPONENTS[:7]

# Dynamic-collateral stress grid: spot shocks (in units of stress_spot) x vol factors.
SPOT_SHOCKS = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
VOL_SHOCKS = np.array([-1.0, 0.0, 1.0])
N_SCENARIOS = len(SPOT_SHOCKS) * len(VOL_SHOCKS)

STEP_DTYPE = np.dtype(
    [
        ("ts", np.int64),
        ("spot", np.float64),
        ("iv", np.float64),
        ("nav", np.float64),
        ("cash", np.float64),
        ("hedge_units", np.float64),
        ("book_delta", np.float64),
        ("net_delta", np.float64),
        ("book_gamma", np.float64),
        ("book_vega", np.float64),
        ("book_theta", np.float64),
        ("collateral_required", np.float64),
        ("utilisation", np.float64),
        *[(name, np.float64) for name in PNL_COMPONENTS],
        ("pnl_total", np.float64),
        ("lp_flow", np.float64),
        ("shares", np.float64),
        ("nav_per_share", np.float64),
        ("n_live_series", np.int64),
        ("insolvent", np.int8),
        ("halted", np.int8),
    ]
)

TRADE_DTYPE = np.dtype(
    [
        ("ts", np.int64),
        ("series", np.int64),
        ("side", np.float64),
        ("size", np.float64),
        ("filled", np.float64),
        ("reject_reason", np.int8),
        ("spot", np.float64),
        ("iv", np.float64),
        ("mark", np.float64),
        ("vega", np.float64),
        ("fee", np.float64),
        ("fee_vega", np.float64),
        ("premium", np.float64),
    ]
)

HEDGE_DTYPE = np.dtype(
    [
        ("ts", np.int64),
        ("qty", np.float64),
        ("spot", np.float64),
        ("exec_price", np.float64),
        ("slippage_cost", np.float64),
        ("gas_cost", np.float64),
        ("mev_cost", np.float64),
        ("reason", np.int8),
    ]
)

SERIES_DTYPE = np.dtype(
    [
        ("volume", np.float64),
        ("fees", np.float64),
        *[(name, np.float64) for name in SERIES_COMPONENTS],
        ("pnl_liquidation", np.float64),
    ]
)


class Params(NamedTuple):
    """Scalars the kernel needs, model variants as integer codes (numba-friendly, cacheable)."""

    initial_capital: float
    collateral: int
    max_utilisation: float
    stress_spot: float
    stress_vol: float
    margin_multiplier: float
    liquidation_threshold: float
    liquidation_penalty: float
    idle_yield: float
    base_fee: float
    spot_fee: float
    vega_fee: float
    min_fee: float
    skew_slope: float
    smile_curvature: float
    standard_size: float
    iv_impact: float
    skew_impact: float
    impact_half_life: float
    cb_iv_move: float
    cb_hours: float
    cb_min_free: float
    run_drawdown: float
    run_fraction: float
    withdrawal_delay_ns: int
    withdrawal_fee: float
    policy: int
    threshold: float
    interval_ns: int
    rebalance_to: int
    instrument: int
    hedge_cap: float
    max_notional_per_step: float
    latency: int
    risk_aversion: float
    slippage: int
    bps: float
    impact_coeff: float
    adv_usd: float
    liquidity_usd: float
    fee_bps: float
    gas_usd: float
    mev_bps: float
    mev_min_notional: float
