"""Build the bundled market files in data/ from the raw third-party files in ../shared/data.

Run: python scripts/build_data.py [--shared PATH]. The output is byte-identical on every rebuild,
so data/SOURCES.md can pin it by sha256.

Timestamp convention: the raw candles are stamped at bar OPEN, but a close is only known when the
bar ends. Every output tick is therefore stamped at bar open + 1 h (hourly) or + 1 day (daily), and
spot and iv are joined on that end time, so the engine never sees a price before it existed.

Hours without a DVOL value are dropped, not filled: interpolation would use the future and
forward-filling would invent flat vol. The engine accepts unevenly spaced ticks.
"""

import argparse
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
SCHEMA = pa.schema(
    [
        pa.field("ts", pa.timestamp("us", tz="UTC")),
        pa.field("spot", pa.float64()),
        pa.field("iv", pa.float64()),
    ]
)
# A finished bar's close and the next bar's open differ by a tick or two: p99.9 is about 6 bp, and
# since 2021 every jump above 10 bp is a collector artefact (see incomplete_bars).
MAX_OPEN_JUMP = 0.001
NO_LICENSE = "none: Binance/Deribit exchange data, research and backtest use only"
MIT = "MIT (daily DVOL); perp: none, Binance exchange data, research and backtest use only"


class Output(NamedTuple):
    perp: str
    iv: str
    symbol: str | None  # DVOL daily symbol; None for an hourly file
    what: str
    licence: str
    first: datetime  # expected first and last tick
    last: datetime


OUTPUTS = {
    "eth_1h": Output(
        "eth_perp_binance_1h.parquet",
        "eth_dvol_1h.parquet",
        None,
        "ETH hourly: spot = Binance ETHUSDT perp 1h close, iv = Deribit ETH DVOL 1h close / 100",
        NO_LICENSE,
        datetime(2022, 6, 18, 2, tzinfo=UTC),
        datetime(2026, 3, 25, 13, tzinfo=UTC),
    ),
    "btc_1h": Output(
        "btc_perp_binance_1h.parquet",
        "btc_dvol_1h.parquet",
        None,
        "BTC hourly: spot = Binance BTCUSDT perp 1h close, iv = Deribit BTC DVOL 1h close / 100",
        NO_LICENSE,
        datetime(2021, 3, 24, 1, tzinfo=UTC),
        datetime(2025, 10, 15, 1, tzinfo=UTC),
    ),
    "eth_1d": Output(
        "eth_perp_binance_1h.parquet",
        "dvol_daily_btc_eth.parquet",
        "ETH",
        "ETH daily: spot = Binance ETHUSDT perp close of the 23:00 bar, "
        "iv = Deribit ETH DVOL daily close / 100",
        MIT,
        datetime(2021, 3, 25, tzinfo=UTC),
        datetime(2026, 3, 25, tzinfo=UTC),
    ),
    "btc_1d": Output(
        "btc_perp_binance_1h.parquet",
        "dvol_daily_btc_eth.parquet",
        "BTC",
        "BTC daily: spot = Binance BTCUSDT perp close of the 23:00 bar, "
        "iv = Deribit BTC DVOL daily close / 100",
        MIT,
        datetime(2021, 3, 25, tzinfo=UTC),
        datetime(2026, 3, 25, tzinfo=UTC),
    ),
}

# Stress-period levels from shared/data/SOURCES.md. Day D means the bars opening on UTC day D,
# i.e. the ticks in (D 00:00, D+1 00:00]; a day's close is the tick at D+1 00:00.
CLOSE_CHECKS = [  # (output, day, column, published close, relative tolerance)
    ("eth_1h", "2022-06-18", "spot", 994.0, 1e-3),
    ("eth_1h", "2022-11-09", "spot", 1101.0, 1e-3),
    ("eth_1h", "2022-11-21", "spot", 1107.0, 1e-3),
    ("btc_1h", "2022-11-21", "spot", 15773.0, 1e-3),
    ("eth_1d", "2021-05-19", "spot", 2443.0, 1e-3),
    ("eth_1d", "2022-11-09", "spot", 1101.0, 1e-3),
    ("btc_1d", "2022-11-21", "spot", 15773.0, 1e-3),
    ("eth_1d", "2021-05-19", "iv", 1.5827, 1e-9),
    ("eth_1d", "2022-11-09", "iv", 1.5393, 1e-9),
    ("eth_1h", "2022-11-09", "iv", 1.5393, 1e-9),  # last hourly close == daily close
    ("btc_1d", "2021-05-19", "iv", 1.2483, 1e-9),
    ("btc_1h", "2021-05-19", "iv", 1.2483, 1e-9),
]
# Hourly closes cannot reach a wick, but must bottom out just above the published intraday low.
LOW_CHECKS = [  # (output, day, published low)
    ("eth_1h", "2022-06-18", 878.0),
    ("btc_1h", "2022-06-18", 17593.0),
    ("btc_1h", "2022-11-09", 15463.0),
]
LOW_BAND = 0.05
# Same for DVOL: the highest hourly close sits a few vol points under the published high.
IV_HIGH_CHECKS = [  # (output, day, published high / 100)
    ("eth_1h", "2022-06-18", 1.498),
    ("eth_1h", "2022-11-09", 1.574),
    ("btc_1h", "2021-05-19", 1.446),
    ("btc_1h", "2022-06-18", 1.334),
    ("btc_1h", "2022-11-09", 1.220),
]
IV_HIGH_BAND = 0.04


def require(ok: bool, message: str) -> None:
    """Fail the build loudly, even under python -O."""
    if not ok:
        raise AssertionError(message)


def read_bars(path: Path, columns: list[str]) -> pl.DataFrame:
    """Put every source on us-precision UTC (the perps are ns) so the joins match exactly."""
    df = pl.read_parquet(path, columns=columns)
    return df.with_columns(pl.col(columns[0]).cast(pl.Datetime("us", "UTC"))).sort(columns[0])


def incomplete_bars(perps: list[pl.DataFrame]) -> pl.DataFrame:
    """Bar-open times of candles the upstream collector saved while the bar was still running.

    Their close is a mid-hour price, so stamping it at the bar end would be wrong. The collector
    fetched both assets at once, so a close-to-next-open jump in either asset marks that hour in
    both. A file's last bar has no next open to check it against and is treated the same way.
    """
    jump = (pl.col("open").shift(-1) / pl.col("close") - 1).abs()
    flagged = [p.filter((jump > MAX_OPEN_JUMP).fill_null(True)).select("ts") for p in perps]
    return pl.concat(flagged).unique().sort("ts")


def hourly(perp: pl.DataFrame, dvol: pl.DataFrame, bad: pl.DataFrame) -> pl.DataFrame:
    bars = perp.join(bad, on="ts", how="anti").join(dvol.rename({"close": "iv"}), on="ts")
    return bars.select(ts=pl.col("ts") + HOUR, spot="close", iv=pl.col("iv") / 100).sort("ts")


def daily(perp: pl.DataFrame, dvol: pl.DataFrame, symbol: str, bad: pl.DataFrame) -> pl.DataFrame:
    closes = (
        perp.join(bad, on="ts", how="anti")
        .filter(pl.col("ts").dt.hour() == 23)
        .select(date=pl.col("ts").dt.truncate("1d"), spot="close")
    )
    iv = dvol.filter(pl.col("symbol") == symbol).select("date", iv=pl.col("close") / 100)
    joined = closes.join(iv, on="date")
    return joined.select(ts=pl.col("date") + DAY, spot="spot", iv="iv").sort("ts")


def day_ticks(df: pl.DataFrame, day: str) -> pl.DataFrame:
    start = datetime.fromisoformat(day).replace(tzinfo=UTC)
    return df.filter(pl.col("ts") > start, pl.col("ts") <= start + DAY)


def check(name: str, df: pl.DataFrame, first: datetime, last: datetime) -> None:
    ts = df["ts"]
    require(df.height > 0 and df.null_count().sum_horizontal().item() == 0, f"{name}: empty/nulls")
    require(ts.diff().drop_nulls().min() > timedelta(0), f"{name}: ts not strictly increasing")
    require(ts[0] == first, f"{name}: first tick {ts[0]} != {first}")
    require(ts[-1] == last, f"{name}: last tick {ts[-1]} != {last}")
    require(df["spot"].is_finite().all() and df["spot"].min() > 0, f"{name}: bad spot")
    require(df["iv"].is_finite().all(), f"{name}: non-finite iv")
    require(df["iv"].min() > 0.05 and df["iv"].max() < 5, f"{name}: iv outside (0.05, 5)")


def stress_checks(built: dict[str, pl.DataFrame]) -> None:
    for name, day, column, expected, tol in CLOSE_CHECKS:
        ticks = day_ticks(built[name], day)
        require(ticks.height > 0, f"{name} {day}: no ticks")
        value = ticks[column][-1]
        require(
            ticks["ts"][-1].hour == 0 and abs(value / expected - 1) <= tol,
            f"{name} {day}: {column} close {value} != {expected}",
        )
    for name, day, low in LOW_CHECKS:
        value = day_ticks(built[name], day)["spot"].min()
        require(low <= value <= low * (1 + LOW_BAND), f"{name} {day}: min spot {value} vs {low}")
    for name, day, high in IV_HIGH_CHECKS:
        value = day_ticks(built[name], day)["iv"].max()
        require(high - IV_HIGH_BAND <= value <= high, f"{name} {day}: max iv {value} vs {high}")


def provenance(shared: Path, perp: str, iv: str, what: str, licence: str) -> str:
    """Name every raw file and its upstream commits, so a bundled file explains itself."""
    inputs = {}
    for file in (perp, iv):
        meta = pq.read_schema(shared / file).metadata
        inputs[file] = json.loads(meta[b"provenance"])["sources"]
    return json.dumps(
        {
            "what": what,
            "ts": "bar END time UTC (raw bar open + bar length): no look-ahead",
            "gaps": "hours without iv or with an incomplete perp bar are dropped, not filled",
            "inputs (shared/data)": inputs,
            "license": licence,
            "build": "python scripts/build_data.py",
        }
    )


def write(df: pl.DataFrame, path: Path, note: str) -> None:
    table = df.to_arrow().cast(SCHEMA).replace_schema_metadata({"provenance": note})
    pq.write_table(table, path, compression="zstd", compression_level=19)


def gap_report(df: pl.DataFrame, bad: pl.DataFrame, step: timedelta) -> str:
    """Count the ticks missing from the regular grid, and how many of them were incomplete bars."""
    ts = df["ts"]
    expected = (ts[-1] - ts[0]) // step + 1
    ends = (bad["ts"] + HOUR).to_list()
    incomplete = sum(ts[0] <= t <= ts[-1] and (t - ts[0]) % step == timedelta(0) for t in ends)
    return (
        f"dropped {expected - df.height} of {expected} ticks "
        f"({incomplete} incomplete perp bars), longest gap {ts.diff().max()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=REPO / "data")
    args = parser.parse_args()

    perps = {
        f: read_bars(args.shared / f, ["ts", "open", "close"])
        for f in ("eth_perp_binance_1h.parquet", "btc_perp_binance_1h.parquet")
    }
    bad = incomplete_bars(list(perps.values()))
    built, notes = {}, {}
    for name, out in OUTPUTS.items():
        perp = perps[out.perp]
        if out.symbol is None:
            df = hourly(perp, read_bars(args.shared / out.iv, ["ts", "close"]), bad)
        else:
            dvol = read_bars(args.shared / out.iv, ["date", "symbol", "close"])
            df = daily(perp, dvol, out.symbol, bad)
        check(name, df, out.first, out.last)
        built[name] = df
        notes[name] = provenance(args.shared, out.perp, out.iv, out.what, out.licence)
    stress_checks(built)

    args.out.mkdir(exist_ok=True)
    for name, df in built.items():
        path = args.out / f"{name}.parquet"
        write(df, path, notes[name])
        step = HOUR if name.endswith("1h") else DAY
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        print(
            f"{path.name}: {df.height} rows, {df['ts'][0]} -> {df['ts'][-1]}, "
            f"{gap_report(df, bad, step)}, {path.stat().st_size} bytes, sha256 {digest}"
        )


if __name__ == "__main__":
    main()
