"""The kernel's vocabulary: model codes, record dtypes, parameter groups and state bundles.

One place for these so the kernel, the results layer and the tests agree on names and codes.
Parameters are grouped as the strategy file's sections (`PoolParams` is `[pool]`, ...), so a step
function's signature says which sections it reads. State travels as NamedTuples of arrays (names
cost nothing in numba: fields resolve at compile time) and the account's scalars as one record.
"""

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

# Model variants, as the integer codes the kernel branches on.
POLICY = {"none": 0, "every_trade": 1, "threshold": 2, "periodic": 3, "whalley_wilmott": 4}
SLIPPAGE = {"none": 0, "fixed_bps": 1, "sqrt_impact": 2, "cpmm": 3}
COLLATERAL = {"full": 0, "dynamic": 1}
INSTRUMENT = {"spot": 0, "perp": 1}
REBALANCE = {"zero": 0, "edge": 1}
VEGA_POLICY = {"none": 0, "band": 1, "tenor_matched": 2}
# What preys on the pool's hedges: nothing, a flat charge ([slippage] mev_bps), or a sandwich.
MEV = {"none": 0, "flat": 1, "sandwich": 2}
SUBMISSION = {"public": 0, "private": 1}

# Why a flow row was not (fully) filled.
# "price": a price-elastic trader took the reference venue's price instead of the pool's.
# "vega_limit": the fill would have taken |book vega| past [pricing] max_vega x NAV.
# "collateral_locked": the collateral it needed is lent out and the money market cannot repay it.
REJECT_REASONS = (
    "",
    "utilisation",
    "insolvent",
    "circuit_breaker",
    "leverage",
    "price",
    "vega_limit",
    "collateral_locked",
    "no_edge",  # a stale-quote trader's row when the oracle is not off the market by his edge
    "winding_down",  # the last LP is leaving and the venue has not yet taken the whole unwind
    "empty",  # no LP capital: the last LP left and nobody has deposited since
)
(
    REJECT_NONE,
    REJECT_UTILISATION,
    REJECT_INSOLVENT,
    REJECT_HALTED,
    REJECT_LEVERAGE,
    REJECT_PRICE,
    REJECT_VEGA_LIMIT,
    REJECT_COLLATERAL_LOCKED,
    REJECT_NO_EDGE,
    REJECT_WINDING_DOWN,
    REJECT_EMPTY,
) = range(11)

# Codes handed to kernel functions as arguments are np.int64, not int: numba compiles a
# function once per distinct int literal it is called with (shrink twice, record_lp four
# times), and a cold compile is already slow.
#
# Why the pool closed a position itself: to restore its collateral, or to pay a leaving LP.
CLOSE_REASONS = ("liquidation", "withdrawal")
LIQUIDATION, WITHDRAWAL = np.int64(len(POLICY)), np.int64(len(POLICY) + 1)
# Why a hedge traded: the policy that decided it (codes shared with POLICY), a forced close, or
# the vega policy that bought or sold a listed option.
VEGA_BAND, VEGA_TENOR_MATCHED = np.int64(len(POLICY) + 2), np.int64(len(POLICY) + 3)
HEDGE_REASONS = {code: name for name, code in POLICY.items()} | {
    LIQUIDATION: "liquidation",
    WITHDRAWAL: "withdrawal",
    VEGA_BAND: "vega_band",
    VEGA_TENOR_MATCHED: "vega_tenor_matched",
}

# What happened in an LP event.
LP_EVENTS = ("deposit", "request", "withdrawal", "rejected")
LP_DEPOSIT, LP_REQUEST, LP_WITHDRAWAL, LP_REJECTED = np.arange(4, dtype=np.int64)

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
    "pnl_impact",
    "pnl_hedge_cost",
    "pnl_funding",
    "pnl_interest",
    "pnl_liquidation",
    "pnl_vega_hedge_cost",  # added last, as the next: a run without it adds an exact 0.0
    "pnl_oracle",  # what fills priced on the oracle, not the market, gained (+) or lost (-)
    "pnl_credit",  # lent cash written off when a money-market squeeze ends (<= 0)
)
# The option-book part of the attribution, kept per series as well.
SERIES_COMPONENTS = PNL_COMPONENTS[:7]

# Dynamic-collateral stress grid: spot shocks (in units of stress_spot) x vol factors.
SPOT_SHOCKS = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
VOL_SHOCKS = np.array([-1.0, 0.0, 1.0])
N_SCENARIOS = len(SPOT_SHOCKS) * len(VOL_SHOCKS)

# --- output records ---------------------------------------------------------------------------

STEP_DTYPE = np.dtype(
    [
        ("ts", np.int64),
        ("spot", np.float64),
        ("oracle", np.float64),  # the oracle's price (the spot, without an oracle)
        ("iv", np.float64),
        ("nav", np.float64),
        ("cash", np.float64),
        ("hedge_units", np.float64),
        ("book_delta", np.float64),
        ("net_delta", np.float64),
        ("book_gamma", np.float64),
        ("book_vega", np.float64),
        ("book_theta", np.float64),
        ("listed_vega", np.float64),  # the part of book_vega in listed options bought as hedges
        ("collateral_required", np.float64),
        ("utilisation", np.float64),
        ("free_cash", np.float64),
        ("leverage", np.float64),
        ("collateral_gap", np.float64),
        *[(name, np.float64) for name in PNL_COMPONENTS],
        ("pnl_total", np.float64),
        ("lp_flow", np.float64),
        ("shares", np.float64),
        ("nav_per_share", np.float64),
        ("n_live_series", np.int64),
        ("insolvent", np.int8),
        ("halted", np.int8),
        # Lent collateral (all 0 while [lending] share = 0): cash supplied to the money market
        # at the end of the tick (part of cash), the part of it the market could not repay
        # now, the market's utilisation and supply rate at the tick, this tick's supply yield
        # (part of pnl_interest), and whether the pool needed cash it could not recall.
        ("lent", np.float64),
        ("lent_locked", np.float64),
        ("lending_utilisation", np.float64),
        ("lending_rate", np.float64),
        ("lending_yield", np.float64),
        ("lending_borrow_interest", np.float64),  # what all the market's borrowers paid
        ("recall_blocked", np.int8),
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
        ("impact", np.float64),
        ("premium", np.float64),
        ("reference", np.float64),  # the reference venue's price per contract (NaN: no rule)
        ("p_accept", np.float64),  # the chance the trader took the pool's price (NaN: no rule)
        ("fee_forgone", np.float64),  # the fee quoted on a row lost to the reference venue
        ("oracle", np.float64),  # the oracle's price the row was quoted on (NaN: no oracle)
        ("oracle_gap", np.float64),  # the trader's gain from that quote over one at the market
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
        ("series", np.int64),  # a listed option (vega hedge), or -1: the underlying
        ("iv", np.float64),  # the vol paid for a listed option (NaN: the underlying)
        ("vega", np.float64),  # the vega the trade added to the book
        ("fee", np.float64),  # the exchange's fee on a listed option
        ("unfilled", np.float64),  # ordered - filled: what the venue or the price limit cut
        ("venue_price_before", np.float64),  # cpmm: the venue's price before (else NaN)
        ("venue_price_after", np.float64),  # cpmm: after the fill (and a sandwich's back-run)
        ("sandwiched", np.int8),
        ("attacker_pnl", np.float64),  # the sandwich's profit, net of attacker_cost_usd
    ]
)

SERIES_DTYPE = np.dtype(
    [
        ("volume", np.float64),
        ("fees", np.float64),
        ("impact", np.float64),
        *[(name, np.float64) for name in SERIES_COMPONENTS],
        ("pnl_liquidation", np.float64),
    ]
)

# An option position the pool closed itself (not a flow row): liquidation or an LP's exit.
CLOSE_DTYPE = np.dtype(
    [
        ("ts", np.int64),
        ("series", np.int64),
        ("qty", np.float64),  # the pool's trade: + buys back a short, - sells a long
        ("mark", np.float64),
        ("penalty", np.float64),  # USD paid over the mark
        ("reason", np.int8),  # index into CLOSE_REASONS
    ]
)

# A deposit, a withdrawal request, a paid withdrawal, or a rejected row.
LP_DTYPE = np.dtype(
    [
        ("ts", np.int64),
        ("event", np.int8),  # index into LP_EVENTS
        ("amount", np.float64),  # USD into the pool (a payout is negative)
        ("shares", np.float64),  # minted (+) or burned (-); requested for a request
        ("nav_per_share", np.float64),
        ("unwind_cost", np.float64),  # what closing positions for this exit cost the leaver
        ("fee", np.float64),  # withdrawal fee, kept by the LPs who stay
        ("yield_driven", np.int8),  # 1: a yield-chasing deposit or request, not an [lp] flow
        ("waited", np.int8),  # 1: a payout that waited (for lent cash, or for the venue)
    ]
)

# Variable-length outputs: the kernel counts what each path writes, per kind, in this order.
RECORD_KINDS = ("hedges", "closes", "lp")

# The account: every scalar of one path's state, as one record (acct.cash, acct.n_live, ...).
ACCOUNT_DTYPE = np.dtype(
    [
        ("cash", np.float64),
        ("units", np.float64),  # hedge position in underlying (spot units or perp contracts)
        ("nav", np.float64),
        ("requirement", np.float64),
        ("locked_cash", np.float64),  # cash that backs obligations (full) or margin (dynamic)
        ("gap", np.float64),  # what liquidation could not restore this tick
        ("cash_prev", np.float64),  # cash, free cash, units and spot at the end of t-1
        ("free_prev", np.float64),
        ("units_prev", np.float64),
        ("spot_prev", np.float64),
        ("short_calls", np.float64),  # contracts the pool is short in calls
        ("short_put_strikes", np.float64),  # sum of strike x contracts over short puts
        ("long_value", np.float64),  # what the pool's long options are worth
        ("book_value", np.float64),
        ("book_delta", np.float64),
        ("book_gamma", np.float64),
        ("book_vega", np.float64),
        ("book_theta", np.float64),
        ("shares", np.float64),
        ("peak_nps", np.float64),  # highest NAV per share so far (the run rule's reference)
        ("run_level", np.float64),  # drawdown at which the run rule fires next
        ("lp_flow", np.float64),  # this tick's deposits less payouts
        ("n_live", np.int64),
        ("flow_at", np.int64),  # next flow row
        ("lp_at", np.int64),  # next LP row
        ("n_hedges", np.int64),
        ("n_closes", np.int64),
        ("n_lp_events", np.int64),
        ("last_bucket", np.int64),  # periodic policy: the interval of the last decision
        ("insolvent", np.int64),
        ("halt_until", np.int64),  # circuit breaker: flow halted before this ns
        ("halted", np.int64),
        ("traded", np.int64),  # a flow row filled this tick
        ("cb_from", np.int64),  # first tick of the circuit breaker's trailing window
        ("wq_head", np.int64),  # withdrawal queue
        ("wq_tail", np.int64),
        ("yield_day", np.int64),  # yield-chasing LPs: the UTC day of the last decision
        ("yield_from", np.int64),  # the last tick at or before the trailing window's start
        ("lent", np.float64),  # cash supplied to the money market (part of cash)
        ("recall_room", np.float64),  # what the market can still repay the pool this tick
        ("recall_blocked", np.int64),  # the pool needed lent cash it could not recall
        ("lp_waiting", np.int64),  # a due withdrawal waits for lent cash
        ("venue_gap", np.float64),  # cpmm: ln(venue price / spot), what arbitrage has left
        ("winding_down", np.int64),  # the last LP's exit waits for the venue: no new flow
    ]
)


# --- parameters, one group per strategy section ---------------------------------------------


class PoolParams(NamedTuple):
    initial_capital: float
    collateral: int
    max_utilisation: float
    stress_spot: float
    stress_vol: float
    margin_multiplier: float
    liquidation_threshold: float
    liquidation_penalty: float
    idle_yield: float
    borrow_rate: float
    max_leverage: float


class PricingParams(NamedTuple):
    base_fee: float
    spot_fee: float
    vega_fee: float
    min_fee: float
    skew_slope: float
    smile_curvature: float
    standard_size: float
    iv_impact: float
    skew_impact: float
    impact_half_life: float  # hours
    cb_iv_move: float
    cb_hours: float
    cb_min_free: float
    max_vega: float  # |book vega| per vol point / NAV above which vega-adding fills stop


class HedgeParams(NamedTuple):
    policy: int
    threshold: float
    interval: int  # ns
    rebalance_to: int
    instrument: int
    hedge_cap: float
    max_notional_per_step: float
    latency: int
    risk_aversion: float
    borrow_fee: float


class SlippageParams(NamedTuple):
    model: int
    bps: float
    impact_coeff: float
    adv_usd: float
    liquidity_usd: float
    fee_bps: float
    gas_usd: float
    mev_bps: float
    mev_min_notional: float
    arb_half_life: float  # hours; 0 = the venue re-anchors to spot before every trade


class MevParams(NamedTuple):
    """[mev]: who preys on the pool's hedges, and the pool's defences."""

    model: int
    submission: int
    private_fee_bps: float
    max_slippage: float
    attacker_cost_usd: float
    min_hedge_usd: float


class LpParams(NamedTuple):
    run_drawdown: float
    run_fraction: float
    withdrawal_delay: int  # ns
    withdrawal_fee: float
    benchmark_apy: float
    deposit_elasticity: float
    withdrawal_elasticity: float
    yield_window_days: int  # ns


class FlowParams(NamedTuple):
    """The [flow] keys the kernel reads: the price-elastic trader, and the flow sized to the
    pool (notional_per_nav against the nominal volume trades_per_day x mean lognormal size)."""

    elasticity: float
    reference_spread_vol: float
    notional_per_nav: float
    trades_per_day: float
    size_median: float
    size_sigma: float
    stale_edge: float  # |market / oracle - 1| a stale-quote trader needs before he trades


class VegaHedgeParams(NamedTuple):
    """[vega_hedge]: when and how much book vega the pool hedges with listed options, and what
    the exchange charges (spread in vol points around the market vol, fee per contract)."""

    policy: int
    band: float  # |book vega| per vol point / NAV that triggers a hedge
    target: float  # ... that the hedge brings it back to
    tenor_days: int  # ns: the band policy trades the listed expiry nearest to now + this
    spread_vol: float
    fee_spot: float  # fee per contract as a share of spot ...
    fee_cap: float  # ... at most this share of the option's price


class LendingParams(NamedTuple):
    """The [lending] keys the kernel reads (the utilisation series arrives with the market)."""

    share: float  # of free cash kept supplied; 0 = off
    base_rate: float
    slope1: float
    kink: float
    slope2: float
    reserve_factor: float
    market_usd: float  # the other suppliers' money: the market without the pool
    recall_share: float
    max_supply_utilisation: float  # no new supply while the market's utilisation is this high
    bad_debt_share: float  # of the lent cash, written off when a squeeze ends


class Params(NamedTuple):
    pool: PoolParams
    pricing: PricingParams
    hedge: HedgeParams
    slippage: SlippageParams
    lp: LpParams
    flow: FlowParams
    vega_hedge: VegaHedgeParams
    lending: LendingParams
    mev: MevParams


# --- inputs and state bundles ---------------------------------------------------------------


class MarketPath(NamedTuple):
    """One path's ticks; `snap` is the surface snapshot each tick may use (-1: none yet)."""

    ts: np.ndarray
    spot: np.ndarray
    iv: np.ndarray
    rate: np.ndarray
    funding: np.ndarray
    snap: np.ndarray
    util: np.ndarray  # the money market's borrow demand per tick, a share of market_usd
    util_pin: np.ndarray  # a squeeze's pinned utilisation (NaN: none); both empty: lending off
    oracle: np.ndarray  # the price the pool quotes on, per tick (empty: the market's spot)
    delay: np.ndarray  # ticks a hedge decided at t waits beyond latency (empty: none)


class SeriesSpec(NamedTuple):
    """The option series the flow trades; series sharing an expiry (or an expiry and strike)
    share inventory impact through expiry_id (strike_id)."""

    expiry: np.ndarray
    strike: np.ndarray
    kind: np.ndarray  # +1.0 call, -1.0 put
    expiry_id: np.ndarray
    strike_id: np.ndarray


class SurfaceGrid(NamedTuple):
    tenors: np.ndarray
    log_moneyness: np.ndarray
    vols: np.ndarray  # [snapshot, tenor, log-moneyness]


class FlowRows(NamedTuple):
    tick: np.ndarray
    series: np.ndarray
    side: np.ndarray
    size: np.ndarray
    informed: np.ndarray  # bool: keeps its own edge rule, never declines on price
    u: np.ndarray  # the row's uniform draw in [0, 1): it takes the pool's price when u < p
    stale: np.ndarray  # bool: a stale-quote trader, who trades only against a lagging oracle


class ListedOptions(NamedTuple):
    """The listed options a vega hedge may trade: at tick t (global over a batch's paths), the
    at-the-money series of each listed expiry, series[offsets[t]:offsets[t+1]] in expiry order.
    Series from `first` on are listed options, never traded by the flow."""

    offsets: np.ndarray
    series: np.ndarray
    first: int


class LpRows(NamedTuple):
    tick: np.ndarray
    amount: np.ndarray


class Book(NamedTuple):
    """Per series: position, and the valuation cache of the tick in valued_at."""

    qty: np.ndarray
    price: np.ndarray
    delta: np.ndarray
    gamma: np.ndarray
    vega: np.ndarray
    theta: np.ndarray
    vanna: np.ndarray
    volga: np.ndarray
    sigma: np.ndarray
    valued_at: np.ndarray  # tick of the cached valuation, -1 never
    live: np.ndarray  # indices of open series, live[:acct.n_live]
    scen: np.ndarray  # [series, scenario] stressed prices (dynamic collateral)
    scen_pnl: np.ndarray  # book + hedge PnL per scenario
    log_strike: np.ndarray  # a valuation term that never changes
    sibling: np.ndarray  # the series of the other kind at the same expiry and strike, or -1


class SharedTerms(NamedTuple):
    """What series share in a tick's valuation, computed once per tick for the first series
    valued instead of once per series: per expiry (valuation.expiry_terms), the time terms; per
    expiry and strike (strike_id, valuation.strike_terms), what the call and the put there have
    in common at one vol: d1, d2, the normal tails, the pdf and the kind-free greeks."""

    at: np.ndarray  # per expiry: tick the terms are for, -1 never
    tau: np.ndarray  # years to expiry
    sqrt_tau: np.ndarray
    disc: np.ndarray  # e^{-r tau}
    forward: np.ndarray  # S e^{r tau}
    strike_at: np.ndarray  # per (expiry, strike): tick the terms are for, -1 never
    vol: np.ndarray  # the pair's vol this tick, which the second series of the pair reuses
    d1: np.ndarray
    d2: np.ndarray
    tail1: np.ndarray  # min(N(d1), N(-d1)), bs.tail
    tail2: np.ndarray
    pdf: np.ndarray  # n(d1)
    gamma: np.ndarray
    vega: np.ndarray
    vanna: np.ndarray
    volga: np.ndarray


class Impact(NamedTuple):
    """Inventory impact on implied vol, per expiry and per (expiry, strike): what fills have
    added so far, and the snapshot taken at the start of the tick that every valuation of the
    tick uses (so fills of one tick are priced independently of their order)."""

    expiry: np.ndarray
    strike: np.ndarray
    expiry_snap: np.ndarray
    strike_snap: np.ndarray


class PendingHedges(NamedTuple):
    """Hedge orders decided and not yet filled (latency), in a ring indexed by tick."""

    qty: np.ndarray
    reason: np.ndarray


class WithdrawalQueue(NamedTuple):
    due: np.ndarray  # ns
    shares: np.ndarray
    waited: np.ndarray  # int8: 1 once the request waited (lent cash, or the venue)


class PathState(NamedTuple):
    """Everything one path carries from tick to tick (allocated by loop.new_state)."""

    book: Book
    terms: SharedTerms
    impact: Impact
    pending: PendingHedges
    queue: WithdrawalQueue
    account: np.ndarray  # one ACCOUNT_DTYPE record
    log_iv_sum: np.ndarray  # running sum of log iv, for the circuit breaker's trailing mean
    bucket_vega: np.ndarray  # tenor-matched vega hedge: book vega per listed expiry of the tick


class Records(NamedTuple):
    """One path's preallocated outputs."""

    steps: np.ndarray
    trades: np.ndarray
    hedges: np.ndarray
    series: np.ndarray
    closes: np.ndarray
    lp: np.ndarray


@dataclass
class KernelOutput:
    """What a batch of paths produced. Variable-length records of kind j (RECORD_KINDS) of path
    k are rows offsets[k, j] : offsets[k, j] + counts[k, j] of that kind's array."""

    records: Records
    offsets: np.ndarray
    counts: np.ndarray

    def rows(self, kind: str) -> np.ndarray:
        """The written rows of one kind, path after path."""
        j = RECORD_KINDS.index(kind)
        keep = [
            np.arange(self.offsets[k, j], self.offsets[k, j] + self.counts[k, j])
            for k in range(self.counts.shape[0])
        ]
        return getattr(self.records, kind)[np.concatenate(keep).astype(np.int64)]
