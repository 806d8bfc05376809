"""The bundled market files keep the contract the engine and data/SOURCES.md rely on."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

DATA = Path(__file__).resolve().parent.parent / "data"
SCHEMA = {
    "ts": pl.Datetime(time_unit="us", time_zone="UTC"),
    "spot": pl.Float64,
    "iv": pl.Float64,
}
HOUR, DAY = timedelta(hours=1), timedelta(days=1)

# file: (rows, first tick, last tick, bar length, longest gap between ticks)
EXPECTED = {
    "eth_1h": (33028, datetime(2022, 6, 18, 2), datetime(2026, 3, 25, 13), HOUR, 4 * HOUR),
    "btc_1h": (38787, datetime(2021, 3, 24, 1), datetime(2025, 10, 15, 1), HOUR, DAY),
    "eth_1d": (1827, datetime(2021, 3, 25), datetime(2026, 3, 25), DAY, DAY),
    "btc_1d": (1827, datetime(2021, 3, 25), datetime(2026, 3, 25), DAY, DAY),
}


@pytest.mark.parametrize("name", EXPECTED)
def test_bundled_file(name: str) -> None:
    rows, first, last, step, longest_gap = EXPECTED[name]
    path = DATA / f"{name}.parquet"
    df = pl.read_parquet(path)

    assert dict(df.schema) == SCHEMA
    assert df.height == rows
    assert df.null_count().sum_horizontal().item() == 0
    assert df["ts"][0] == first.replace(tzinfo=UTC)
    assert df["ts"][-1] == last.replace(tzinfo=UTC)

    gaps = df["ts"].diff().drop_nulls()
    assert gaps.min() >= step, "ts must be strictly increasing, at least one bar apart"
    assert gaps.max() == longest_gap
    # Ticks sit on bar ends: whole hours, and midnight for daily files.
    assert (df["ts"].dt.truncate("1h" if step == HOUR else "1d") == df["ts"]).all()

    for column in ("spot", "iv"):
        assert df[column].is_finite().all()
        assert df[column].min() > 0
    assert df["iv"].min() > 0.05 and df["iv"].max() < 5, "iv is decimal, not percent"

    assert b"provenance" in pq.read_schema(path).metadata


@pytest.mark.parametrize("asset", ["eth", "btc"])
def test_daily_matches_hourly_at_day_end(asset: str) -> None:
    """Both files stamp a close at the end of its bar, so the same instant has the same values."""
    hourly = pl.read_parquet(DATA / f"{asset}_1h.parquet")
    daily = pl.read_parquet(DATA / f"{asset}_1d.parquet")
    both = daily.join(hourly, on="ts", suffix="_h")
    assert both.height > 1000
    assert (both["spot"] == both["spot_h"]).all()
    assert (both["iv"] == both["iv_h"]).all()
