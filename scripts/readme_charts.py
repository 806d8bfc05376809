"""Draw the README's LP-run chart: `python scripts/readme_charts.py` (writes docs/lp-run.png).

The same BTC 2022 pool with patient LPs and with LPs who run at every 1 % of drawdown: NAV per
share and the capital left in the pool, from the bundled strategies, so the chart can be redrawn.
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


def steps(name: str) -> pl.DataFrame:
    plan = prepare(ROOT / "strategies" / f"{name}.toml")
    return pl.concat(built.steps for _, built in run_batches(plan))


def main() -> None:
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


if __name__ == "__main__":
    main()
