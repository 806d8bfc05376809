"""Ledger and balance-sheet properties on random pools (tests/scenarios.random_scenario: every
feature on, often): reconciliation, conservation, causality, determinism, full collateral that
holds, fair LP exits, liquidation that helps, fills priced independently of their order.

Hypothesis draws the scenario's seed; `hypothesis.event` names what each draw exercised, and
test_scenarios_exercise_every_feature asserts that the draws hit each feature often enough.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from scenarios import TOL, Scenario, flow_frame, market_frame, no_fees, random_scenario

from backtest.kernel.types import PNL_COMPONENTS
from backtest.pricing import price
from backtest.runner import simulate_frames

pytestmark = pytest.mark.property

SETTINGS = settings()  # the profile's: tests/conftest.py
SEEDS = st.integers(0, 2**31 - 1)


def simulate(sc: Scenario, **changes):
    """Run a scenario (with strategy sections updated by `changes`); name what it exercised."""
    strategy = {name: dict(keys) for name, keys in sc.strategy.items()}
    for name, keys in changes.items():
        strategy[name] |= keys
    tables, summary = simulate_frames(strategy, sc.market, sc.flow, lp_flows=sc.lp)
    for name in features(strategy, sc, tables):
        event(name)
    return tables, summary


def features(strategy: dict, sc: Scenario, tables) -> list[str]:
    """What a run exercised, as names for hypothesis.event and the hit-rate test."""
    steps, lp = tables.steps, tables.lp
    hit = {
        "liquidation": tables.liquidations.filter(pl.col("reason") == "liquidation").height > 0
        or (tables.hedges["reason"] == "liquidation").any(),
        "circuit breaker": bool(steps["halted"].any()),
        "run rule": strategy["lp"]["run_drawdown"] > 0
        and lp.filter(pl.col("event") == "request").height > (0 if sc.lp is None else 1),
        "LP flows": sc.lp is not None,
        "LP exit forced a close": (tables.liquidations["reason"] == "withdrawal").any()
        or (tables.hedges["reason"] == "withdrawal").any(),
        "dynamic collateral": strategy["pool"]["collateral"] == "dynamic",
        "perp hedge": strategy["hedge"]["instrument"] == "perp" and tables.hedges.height > 0,
        "multi-path": "path_id" in sc.market.columns,
        "inventory impact": (tables.trades["impact"] != 0).any(),
        "collateral gap": bool((steps["collateral_gap"] > 0).any()),
        "lost on price": (tables.trades["reject_reason"] == "price").any(),
        "flow sized to NAV": strategy["flow"].get("notional_per_nav", 0.0) > 0,
        "yield chasing": bool(lp["yield_driven"].any()),
        "vega hedge": bool((tables.hedges["instrument"] == "option").any()),
        "vega limit": bool((tables.trades["reject_reason"] == "vega_limit").any()),
        "venue memory": strategy["slippage"].get("arb_half_life", 0.0) > 0
        and bool((tables.hedges["instrument"] != "option").any()),
        "sandwich": bool(tables.hedges["sandwiched"].any()),
        "hedge cut at its limit": bool((tables.hedges["unfilled"] != 0).any()),
        "oracle off the market": bool((steps["oracle"] != steps["spot"]).any()),
        "stale-quote trades": bool((tables.trades["stale"] & (tables.trades["filled"] > 0)).any()),
    }
    return [name for name, on in hit.items() if on]


def scale(sc: Scenario, steps: pl.DataFrame) -> float:
    return max(sc.capital, float(steps["nav"].abs().max()))


def assert_ledger_holds(sc: Scenario, tables, summary: pl.DataFrame) -> float:
    """The components sum to pnl_total and NAV moves by pnl_total + lp_flow on every tick of
    every path; returns the tolerance used (TOL of the pool's size)."""
    steps = tables.steps
    components = steps.select(pl.sum_horizontal(PNL_COMPONENTS)).to_series().to_numpy()
    atol = TOL * scale(sc, steps)
    assert np.allclose(components, steps["pnl_total"].to_numpy(), rtol=0, atol=atol)
    for _, path in steps.group_by("path_id"):
        d_nav = np.diff(path["nav"].to_numpy(), prepend=sc.capital)
        assert np.allclose(d_nav, (path["pnl_total"] + path["lp_flow"]).to_numpy(), atol=atol)
    assert (summary["reconcile_max_abs"] <= atol).all()
    return atol


def assert_same_runs(first, first_summary, again, again_summary) -> None:
    for name in ("steps", "trades", "hedges", "series", "liquidations", "lp"):
        assert getattr(first, name).equals(getattr(again, name))
    assert first_summary.equals(again_summary)


@SETTINGS
@given(SEEDS)
def test_attribution_reconciles_every_tick(seed):
    sc = random_scenario(seed)
    tables, summary = simulate(sc)
    steps = tables.steps
    atol = assert_ledger_holds(sc, tables, summary)
    assert (steps["pnl_liquidation"] <= 0).all()
    # A venue that remembers may fill a hedge better than spot (trading back against the
    # pool's own footprint); against the venue price before it, a fill always costs.
    if sc.strategy["slippage"].get("arb_half_life", 0.0) == 0.0:
        assert (steps["pnl_hedge_cost"] <= 0).all()
    hedges = tables.hedges
    own = hedges["qty"] * (hedges["exec_price"] - hedges["venue_price_before"])
    assert (own.fill_nan(0.0) >= -atol).all() and (hedges["mev_cost"] >= 0).all()
    assert (hedges["attacker_pnl"] >= 0).all()
    assert (steps["pnl_impact"] >= -atol).all()  # a fill pays for its own move, to rounding
    assert (tables.trades["fee_vega"] <= tables.trades["fee"]).all()
    # Shares = 0 only in an emptied pool: no position of any kind, no cash, no NAV.
    gone = steps.filter(pl.col("shares") == 0)
    assert (gone["n_live_series"] == 0).all() and (gone["hedge_units"] == 0).all()
    assert (gone["cash"] == 0).all() and (gone["nav"] == 0).all()
    # A withdrawal's fee is withdrawal_fee of what the leaver's shares were worth after the
    # closes they forced (net), never of their value before them (gross).
    fee = sc.strategy["lp"]["withdrawal_fee"]
    paid = tables.lp.filter((pl.col("event") == "withdrawal") & (pl.col("fee") > 0))
    np.testing.assert_allclose(paid["fee"], fee * (paid["fee"] - paid["amount"]), rtol=1e-9)


def rebuilt_nav(sc: Scenario, tables, path_id: int) -> float:
    """Final NAV from what traders paid, expiries paid out, the pool paid to close positions
    and hedge, cash earned and LPs brought and took, with no knowledge of the ledger."""

    def mine(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.filter(pl.col("path_id") == path_id) if frame.height else frame

    market = sc.market.filter(pl.col("path_id") == path_id) if "path_id" in sc.market else sc.market
    steps, trades, hedges = mine(tables.steps), mine(tables.trades), mine(tables.hedges)
    closes, lp = mine(tables.liquidations), mine(tables.lp)
    listed = hedges.filter(pl.col("instrument") == "option")  # the vega hedge's options
    hedges = hedges.filter(pl.col("instrument") != "option")
    ts, spot = market["ts"].to_numpy(), market["spot"].to_numpy()
    cash = sc.capital + float(trades["premium"].sum())
    cash -= float((listed["qty"] * listed["exec_price"] + listed["fee"]).sum())
    cash -= float((closes["qty"] * closes["mark"] + closes["penalty"]).sum())
    cash += float(lp.filter(pl.col("event").is_in(["deposit", "withdrawal"]))["amount"].sum())
    costs = float((hedges["gas_cost"] + hedges["mev_cost"]).sum())
    units = steps["hedge_units"].to_numpy()
    if sc.strategy["hedge"]["instrument"] == "spot":
        cash -= float((hedges["qty"] * hedges["exec_price"]).sum()) + costs
    else:
        cash -= float(hedges["slippage_cost"].sum()) + costs
        cash += float((units[:-1] * np.diff(spot)).sum())
    cash += float(steps["pnl_interest"].sum() + steps["pnl_funding"].sum())
    cash += float(steps["pnl_credit"].sum())  # lent cash the money market wrote off
    # Every series settles at the first tick at or after its expiry, on the position then.
    fills = trades.filter(pl.col("filled") > 0).select(
        "ts", "expiry", "strike", "kind", qty=-pl.col("side").cast(pl.Float64) * pl.col("filled")
    )
    moves = pl.concat(
        [fills, closes.select("ts", "expiry", "strike", "kind", "qty")]
        + [listed.select("ts", "expiry", "strike", "kind", "qty")]
    )
    for (expiry, strike, kind), rows in moves.group_by(["expiry", "strike", "kind"]):
        at = int(np.searchsorted(ts, np.datetime64(expiry.replace(tzinfo=None), "us"), "left"))
        held = float(rows["qty"].sum())
        if at < len(ts):
            cash += held * float(price(kind, spot[at], strike, 0.0, 0.5))
        else:  # a listed option still open: at the market's vol of the last tick
            cash += held * listed_mark(sc, market, kind, strike, expiry)
    hedge_value = units[-1] * spot[-1] if sc.strategy["hedge"]["instrument"] == "spot" else 0.0
    return cash + hedge_value


def listed_mark(sc: Scenario, market: pl.DataFrame, kind: str, strike: float, expiry) -> float:
    """A listed option's mark at the last tick: Black-Scholes at ATM iv + the smile, no impact."""
    pricing = sc.strategy["pricing"]
    rate, last = pricing["rate"], market.row(-1, named=True)
    tau = (expiry - last["ts"].replace(tzinfo=expiry.tzinfo)).total_seconds() / (365 * 86_400)
    k = math.log(strike / (last["spot"] * math.exp(rate * tau)))
    vol = last["iv"] + pricing["skew_slope"] * k + pricing["smile_curvature"] * k * k
    return float(price(kind, last["spot"], strike, tau, max(vol, 0.01), rate))


@SETTINGS
@given(SEEDS)
def test_money_is_conserved(seed):
    """Dynamic collateral, liquidations and LP payouts included: final NAV rebuilt from the
    trades, closes, hedges and LP events tables."""
    sc = random_scenario(seed, expire_inside=True)
    tables, _ = simulate(sc)
    for path_id in tables.steps["path_id"].unique().to_list():
        steps = tables.steps.filter(pl.col("path_id") == path_id)
        open_listed = tables.series.filter(
            (pl.col("path_id") == path_id) & pl.col("listed") & (pl.col("expiry") > steps["ts"][-1])
        )
        assert steps["n_live_series"][-1] <= open_listed.height
        rebuilt = rebuilt_nav(sc, tables, path_id)
        assert abs(steps["nav"][-1] - rebuilt) <= 1e-8 * scale(sc, tables.steps)


@SETTINGS
@given(SEEDS, st.floats(0.2, 0.8))
def test_no_look_ahead(seed, cut_fraction):
    """Changing the market after tick k and the flow and LP rows after ts[k+1] changes no row up
    to k."""
    sc = random_scenario(seed)
    tables, _ = simulate(sc)
    n = (
        sc.market.filter(pl.col("path_id") == 0).height
        if "path_id" in sc.market
        else sc.market.height
    )
    k = int(cut_fraction * (n - 1))
    first = sc.market.filter(pl.col("path_id") == 0) if "path_id" in sc.market else sc.market
    cut_ts = first["ts"][k + 1]
    later = pl.col("ts") >= cut_ts
    changed = Scenario(
        seed,
        sc.strategy,
        sc.market.with_columns(
            spot=pl.when(later).then(pl.col("spot") * 1.3).otherwise(pl.col("spot")),
            iv=pl.when(later).then(pl.col("iv") * 0.5).otherwise(pl.col("iv")),
            funding=pl.when(later).then(-0.5).otherwise(pl.col("funding")),
        ),
        sc.flow.filter(pl.col("ts") < cut_ts),
        None if sc.lp is None else sc.lp.filter(pl.col("ts") < cut_ts),
    )
    other, _ = simulate(changed)
    early = pl.col("ts") < cut_ts
    # A tick trades the flow up to the next tick of its own path: on another path's clock the
    # last tick before cut_ts may reach past it.
    settled = pl.col("ts").shift(-1).over("path_id") <= cut_ts
    assert tables.steps.filter(settled).equals(other.steps.filter(settled))
    hindsight = "pnl_held_to_expiry"  # an ex-post analytic of each fill, by definition
    assert (
        tables.trades.filter(early)
        .drop(hindsight)
        .equals(other.trades.filter(early).drop(hindsight))
    )
    for name in ("hedges", "liquidations", "lp"):
        assert getattr(tables, name).filter(early).equals(getattr(other, name).filter(early))


@SETTINGS
@given(SEEDS)
def test_same_inputs_same_outputs(seed):
    sc = random_scenario(seed)
    assert_same_runs(*simulate(sc), *simulate(sc))


@SETTINGS
@given(SEEDS)
def test_no_flow_and_no_yield_means_nav_never_moves(seed):
    sc = random_scenario(seed)
    empty = Scenario(seed, sc.strategy, sc.market, sc.flow.head(0), None)
    tables, _ = simulate(
        empty,
        pool={"idle_yield": 0.0, "borrow_rate": 0.0},
        lp={"run_drawdown": 0.0, "deposit_elasticity": 0.0, "withdrawal_elasticity": 0.0},
    )
    assert (tables.steps["nav"] == sc.capital).all()
    assert (tables.steps["pnl_total"] == 0.0).all()
    assert tables.hedges.height == 0 and tables.liquidations.height == 0


@SETTINGS
@given(SEEDS)
def test_full_collateral_holds_at_every_tick(seed):
    """Free cash >= 0, no borrowing and requirement <= NAV at every recorded tick, unless the
    tick reports a gap liquidation could not bridge; a gap leaves nothing it could close."""
    sc = random_scenario(seed)
    pool = {
        "collateral": "full",
        "max_utilisation": min(sc.strategy["pool"]["max_utilisation"], 1.0),
    }
    tables, _ = simulate(sc, pool=pool)
    steps = tables.steps
    atol = TOL * scale(sc, steps)
    holds = (
        (steps["free_cash"] >= -atol)
        & (steps["cash"] >= -atol)
        & (steps["collateral_required"] <= steps["nav"] + atol)
    )
    gap = steps["collateral_gap"] > 0
    assert (holds | gap).all()
    # Left a gap while solvent: only a hedge the venue would not take back at a sane cost.
    stuck = steps.filter(gap & (pl.col("nav") > 0))
    assert ((stuck["hedge_units"] != 0) | (stuck["collateral_gap"] <= 1e-6 * sc.capital)).all()


@SETTINGS
@given(SEEDS, st.floats(0.1, 0.9), st.sampled_from([0.0, 0.01]))
def test_stayers_are_not_hurt_by_a_withdrawal(seed, when, fee):
    """A withdrawal paid at tick k: the LPs who stay hold the NAV per share they would have held
    at k without it (more, by the fee they keep), whatever closes it forced; the exit does not
    make the pool insolvent, and leaves the stayers' net delta no more open than the hedge
    policy had it before the LP step (the same run without the exit, at k)."""
    sc = random_scenario(seed)
    quiet = {"run_drawdown": 0.0, "withdrawal_fee": fee, "withdrawal_delay": 0.0}
    base = Scenario(seed, sc.strategy, sc.market, sc.flow, None)
    alone, _ = simulate(base, lp=quiet)
    path = alone.steps.filter(pl.col("path_id") == alone.steps["path_id"][0])
    k = max(1, int(when * (path.height - 1)))
    ts = path["ts"]
    request = pl.DataFrame({"ts": [ts[k]], "amount": [-0.4 * max(path["nav"][k], 1.0)]})
    tables, _ = simulate(Scenario(seed, sc.strategy, sc.market, sc.flow, request), lp=quiet)
    at = pl.col("ts") == ts[k]
    before = alone.steps.filter(at).sort("path_id")
    after = tables.steps.filter(at).sort("path_id")
    # The one exception: closes that cost more than the leaver's stake (a thin venue): the
    # leaver gets nothing and the stayers pay the rest (lp.unwind_cost shows it), or, for a
    # request for more than the LPs hold (the last LP's: on another path of a multi-path
    # market 40 % of path 0's NAV can be all there is), the pool is left with bad debt.
    paid = tables.lp.filter((pl.col("event") == "withdrawal") & at)
    over = paid.filter(pl.col("unwind_cost") >= -pl.col("shares") * pl.col("nav_per_share"))
    asked = tables.lp.filter((pl.col("event") == "request") & at).sort("path_id")
    everything = asked.filter(-pl.col("shares") >= before["shares"].gather(asked["path_id"]))
    covered = ~before["path_id"].is_in(
        pl.concat([over["path_id"], everything["path_id"]]).implode()
    )
    assert not (after["insolvent"] & ~before["insolvent"] & covered).any()
    # And closes that earned (a venue that remembers the pool's earlier hedges): the gain stays
    # with the pool, so the stayers' NAV per share rises by it; as does a fee.
    gained = before["path_id"].is_in(paid.filter(pl.col("unwind_cost") < 0)["path_id"].implode())
    solvent = ((before["nav"] > 0) & (after["shares"] > 0) & covered).to_numpy()
    exact = solvent & ~gained.to_numpy() & (fee == 0.0)
    np.testing.assert_allclose(
        after["nav_per_share"].to_numpy()[exact],
        before["nav_per_share"].to_numpy()[exact],
        rtol=1e-9,
    )
    more = solvent & ~exact
    assert (
        after["nav_per_share"].to_numpy()[more]
        >= before["nav_per_share"].to_numpy()[more] * (1 - 1e-9)
    ).all()
    if sc.strategy["hedge"]["policy"] != "none":
        hedged = solvent & (before["net_delta"].abs() < after["net_delta"].abs() - 1e-9).to_numpy()
        # where the stayers are left more open, the re-hedge was cut by the venue or the
        # collateral rule: the hedges table shows the cut (or a hedge at its cap)
        for path_id in before["path_id"].to_numpy()[hedged]:
            mine = tables.hedges.filter(at & (pl.col("path_id") == path_id))
            cut = (mine["reason"] == "withdrawal").any() or (mine["unfilled"] != 0).any()
            assert cut, (path_id, before["net_delta"], after["net_delta"])


@SETTINGS
@given(SEEDS, st.floats(0.1, 0.9))
def test_the_last_lp_out_leaves_an_empty_book_and_nav_zero(seed, when):
    sc = random_scenario(seed)
    first = sc.market.filter(pl.col("path_id") == 0) if "path_id" in sc.market else sc.market
    k = max(1, int(when * (first.height - 1)))
    everything = pl.DataFrame({"ts": [first["ts"][k]], "amount": [-100.0 * sc.capital]})
    tables, summary = simulate(
        Scenario(seed, sc.strategy, sc.market, sc.flow, everything),
        lp={"run_drawdown": 0.0, "withdrawal_delay": 0.0},
        slippage={"liquidity_usd": 5e7},
    )
    for _, steps in tables.steps.group_by("path_id"):
        # from the request on: a yield-chasing LP may have taken a slice out before it
        paid = steps.filter((pl.col("lp_flow") < 0) & (pl.col("ts") >= first["ts"][k]))
        if paid.height == 0:  # insolvent before the request, or nothing realised yet
            assert (
                steps.filter(pl.col("ts") <= first["ts"][k])["insolvent"].any()
                or (steps.filter(pl.col("ts") >= first["ts"][k])["shares"] > 0).all()
            )
            continue
        # Paid as far as the closes realised; the rest waited, and nothing else happened in
        # the pool meanwhile but selling what was left: from the last payment on, it is empty.
        last = steps.filter(pl.col("shares") == 0)
        if last.height == 0:  # still selling what the venue would not take when the run ended
            assert (steps.filter(pl.col("ts") >= paid["ts"][0])["n_live_series"] == 0).all()
            continue
        after = steps.filter(pl.col("ts") >= last["ts"][0])
        assert (after["shares"] == 0).all() and (after["n_live_series"] == 0).all()
        assert (after["hedge_units"] == 0).all()
        assert (after["nav"] == 0).all() and (after["cash"] == 0).all()
        assert (
            not after["insolvent"].any()
            or steps.filter(pl.col("ts") < paid["ts"][0])["insolvent"].any()
        )  # insolvency is for good: only a pool that was insolvent before stays so


@SETTINGS
@given(SEEDS)
def test_liquidation_never_raises_the_requirement(seed):
    """Dynamic pools: at the first tick a liquidation acts, the requirement is no higher than
    the same pool's without liquidation."""
    sc = random_scenario(seed)
    util = sc.strategy["pool"]["max_utilisation"]
    dynamic = {"collateral": "dynamic", "liquidation_threshold": util * 1.05}
    liquidated, _ = simulate(sc, pool=dynamic, lp={"run_drawdown": 0.0})
    never, _ = simulate(sc, pool=dynamic | {"liquidation_threshold": 1e9}, lp={"run_drawdown": 0.0})
    acted = pl.concat(
        [
            liquidated.liquidations.select("path_id", "ts"),
            liquidated.hedges.filter(pl.col("reason") == "liquidation").select("path_id", "ts"),
        ]
    )
    # LP exits (from [lp] flows or yield-chasing LPs) close positions too, and whether one is
    # paid may depend on the threshold: compare before the first one
    exits = pl.concat([run.lp for run in (liquidated, never)]).filter(
        pl.col("event") == "withdrawal"
    )
    acted = acted.filter(pl.col("ts") < exits["ts"].min()) if exits.height else acted
    for (path_id,), times in acted.group_by(["path_id"]):
        t = times["ts"].min()
        mine = pl.col("path_id") == path_id
        req = liquidated.steps.filter(mine & (pl.col("ts") == t))["collateral_required"][0]
        ref = never.steps.filter(mine & (pl.col("ts") == t))["collateral_required"][0]
        assert req <= ref * (1 + 1e-9) + 1e-9


@SETTINGS
@given(SEEDS)
def test_fills_in_one_tick_are_priced_independently_of_their_order(seed):
    """Shuffle the rows of each tick: every fill gets the same vol, price, impact and fee (a
    large pool, so collateral never cuts one and order cannot change what fills; no
    price-elastic traders, whose draws follow the row numbers a shuffle changes)."""
    sc = random_scenario(seed)
    roomy = {"initial_capital": 1e12, "collateral": "full", "max_utilisation": 1.0}
    pricing = {"iv_impact": 0.02, "skew_impact": 0.01, "vega_fee": 0.0, "cb_min_free": 0.0}
    sc.strategy["flow"]["elasticity"] = 0.0
    one, _ = simulate(sc, pool=roomy, pricing=pricing)
    shuffled = sc.flow.with_row_index("flow_row").sample(fraction=1.0, shuffle=True, seed=seed)
    other, _ = simulate(
        Scenario(seed, sc.strategy, sc.market, shuffled.drop("flow_row").sort("ts"), sc.lp),
        pool=roomy,
        pricing=pricing,
    )
    cols = ["iv", "mark", "impact", "fee", "filled"]
    key = ["path_id", "ts", "expiry", "strike", "kind", "side", "size"]
    a = one.trades.sort(key).select(cols).to_numpy()
    b = other.trades.sort(key).select(cols).to_numpy()
    np.testing.assert_array_equal(a, b)


@SETTINGS
@given(SEEDS, st.floats(0.5, 200.0))
def test_a_same_tick_round_trip_loses_at_least_its_fees(seed, size):
    """Add a buy and a sale of one series in one tick to a random pool: the trader pays the
    pool at least the two fees."""
    sc = random_scenario(seed)
    pricing = {"iv_impact": 0.03, "skew_impact": 0.01, "cb_iv_move": 0.0, "cb_min_free": 0.0}
    row = sc.flow.head(1)
    pair = pl.concat(
        [row.with_columns(side=pl.lit(s, pl.Int8), size=pl.lit(size)) for s in (1, -1)]
    )
    flow = pl.concat([sc.flow, pair]).sort("ts", maintain_order=True)
    roomy = {"initial_capital": 1e12, "collateral": "full", "max_utilisation": 1.0}
    tables, _ = simulate(  # sizes as given: the pair is found by its size
        Scenario(seed, sc.strategy, sc.market, flow, None),
        pool=roomy,
        pricing=pricing,
        flow={"notional_per_nav": 0.0},
    )
    trades = tables.trades.filter(
        (pl.col("ts") == row["ts"][0])
        & (pl.col("strike") == row["strike"][0])
        & (pl.col("size") == size)
    )
    filled = trades.filter(pl.col("filled") > 0)
    if filled.height == 2 * tables.steps["path_id"].n_unique():
        for _, pair_rows in filled.group_by("path_id"):
            assert float(pair_rows["premium"].sum()) >= float(pair_rows["fee"].sum()) - 1e-9


def test_scenarios_exercise_every_feature():
    """The random pools above turn each feature on often enough for the properties to bite."""
    runs = 80
    counts: dict[str, int] = {}
    for seed in range(runs):
        sc = random_scenario(seed)
        tables, _ = simulate_frames(sc.strategy, sc.market, sc.flow, lp_flows=sc.lp)
        for name in features(sc.strategy, sc, tables):
            counts[name] = counts.get(name, 0) + 1
    rates = {name: counts.get(name, 0) / runs for name in MINIMUM_RATES}
    assert all(rates[name] >= low for name, low in MINIMUM_RATES.items()), rates


MINIMUM_RATES = {
    "liquidation": 0.2,
    "circuit breaker": 0.15,
    "run rule": 0.15,
    "LP flows": 0.3,
    "LP exit forced a close": 0.05,
    "dynamic collateral": 0.3,
    "perp hedge": 0.2,
    "multi-path": 0.2,
    "inventory impact": 0.2,
    "lost on price": 0.1,
    "flow sized to NAV": 0.25,
    "yield chasing": 0.05,
    "vega hedge": 0.2,
    "vega limit": 0.1,
    "venue memory": 0.15,
    "hedge cut at its limit": 0.1,
    "sandwich": 0.04,
    "oracle off the market": 0.15,
    "stale-quote trades": 0.05,
}


def test_full_collateral_fills_never_over_commit():
    """Flat market, pool only sells, no hedge: the requirement moves only with trades and NAV
    only rises, so utilisation above max_utilisation could only come from over-filling. (A
    hedge may use the room between max_utilisation and NAV: a borrowed unit locks its value.)"""
    for seed in range(10):
        rng = np.random.default_rng(seed)
        cap = float(rng.choice([0.3, 0.8, 1.0]))
        strategy = no_fees(
            pool={"collateral": "full", "max_utilisation": cap},
            pricing={"base_fee": 0.01},
            hedge={"policy": "none"},
        )
        market = market_frame(30, seed=seed, vol=0.0).with_columns(iv=pl.lit(0.7))
        flow = flow_frame(market, int(rng.integers(5, 60)), seed=seed, sides=(1,))
        flow = flow.with_columns(size=pl.col("size") * 40)
        tables, _ = simulate_frames(strategy, market, flow)
        assert tables.steps["utilisation"].max() <= cap * (1 + 1e-12)
        assert (tables.trades["reject_reason"] == "utilisation").any()
