"""Draw the README's charts: `python scripts/readme_charts.py` writes docs/lp-run.png and
docs/attacks.png.

lp-run: the same BTC 2022 pool with patient LPs and with LPs who run at every 1 % of drawdown,
NAV per share and the capital left in the pool. attacks: the LPs' APY under each of the on-chain
pool's enemies and each defence, from the bundled strategies (and the overrides named on the
chart), so both can be redrawn.
"""

import matplotlib

matplotlib.use("Agg")
from pathlib import Path  # noqa: E402

import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import polars as pl  # noqa: E402

from backtest.runner import prepare, run_batches  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

PAIR = {
    "btc-2022-dynamic-collateral": "LPs stay",
    "lp-run-btc-2022": "LPs run at each 1 % drawdown",
}


# (label, strategy, overrides): the attacks chart's bars, top to bottom
ATTACKS = (
    ("default: 5 bp venue, market prices", "default", {}),
    ("thin venue that remembers (20 M cpmm)", "thin-venue", {}),
    ("↳ same venue re-anchored every trade", "thin-venue", {"slippage.arb_half_life": 0.0}),
    ("hedges sandwiched (50 M cpmm, public)", "sandwiched-hedges", {}),
    ("↳ defence: 0.2 % max slippage", "sandwiched-hedges", {"mev.max_slippage": 0.002}),
    ("↳ defence: private submission, 3 bp", "private-hedges", {}),
    ("↳ no attacker at all", "sandwiched-hedges", {"mev.model": "none"}),
    ("oracle 1 h behind, 10 % stale-quote traders", "stale-oracle", {}),
    ("↳ same oracle, no stale-quote traders", "stale-oracle", {"flow.stale_fraction": 0.0}),
    ("BTC 2022, lent collateral squeezed", "lent-collateral-squeeze", {}),
    ("↳ same pool, nothing lent", "lent-collateral-squeeze", {"lending.share": 0.0}),
)


def steps(name: str) -> pl.DataFrame:
    plan = prepare(ROOT / "strategies" / f"{name}.toml")
    return pl.concat(built.steps for _, built in run_batches(plan))


def apy(name: str, overrides: dict) -> float:
    plan = prepare(ROOT / "strategies" / f"{name}.toml", overrides=overrides)
    return float(pl.concat(summary for summary, _ in run_batches(plan))["apy"][0])


def attacks() -> None:
    labels = [label for label, _, _ in ATTACKS]
    values = [100 * apy(name, overrides) for _, name, overrides in ATTACKS]
    fig, ax = plt.subplots(figsize=(10, 5.2))
    colours = ["#d62728" if v < 0 else "#1f77b4" for v in values]
    ax.barh(range(len(values)), values, color=colours)
    for y, v in enumerate(values):
        ax.text(
            v + (0.2 if v >= 0 else -0.2),
            y,
            f"{v:.1f} %",
            va="center",
            ha="left" if v >= 0 else "right",
            fontsize=9,
        )
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set_xlim(min(min(values), 0.0) - 3.0, max(values) + 2.0)  # room for the labels
    ax.axvline(0.0, color="black", lw=0.8)
    ax.set_xlabel("LP APY (%)")
    ax.set_title("What the on-chain pool's enemies cost, and what the defences recover")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    out = ROOT / "docs" / "attacks.png"
    fig.savefig(out, dpi=90)
    print(out)


def lp_run() -> None:
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True)
    for name, label in PAIR.items():
        frame = steps(name)
        held = frame.with_columns(  # an emptied pool has no NAV per share
            pl.when(pl.col("shares") > 0).then(pl.col("nav_per_share")).alias("nav_per_share")
        )
        top.plot(held["ts"], held["nav_per_share"].to_numpy(), label=label, lw=1.2)
        bottom.plot(frame["ts"], frame["nav"] / 1e6, label=label, lw=1.2)
    top.axhline(1.0, color="grey", lw=0.8, ls="--")
    top.set_ylabel("NAV per share (USD)")
    top.set_title("BTC pool through May-Dec 2022: LPs who stay and LPs who run")
    bottom.set_ylabel("NAV (M USD)")
    bottom.set_xlabel("date (UTC)")
    bottom.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m"))
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left")
    fig.tight_layout()
    out = ROOT / "docs" / "lp-run.png"
    fig.savefig(out, dpi=90)
    print(out)


def main() -> None:
    lp_run()
    attacks()


if __name__ == "__main__":
    main()
