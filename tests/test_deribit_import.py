"""Deribit option-trade exports become flow tables; broken exports fail on the first bad cell."""

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from backtest.errors import InputError
from backtest.inputs.deribit import REQUIRED, import_deribit_trades
from backtest.inputs.flow import FLOW_SCHEMA

# Real Deribit trades, kept in the repository (provenance in data/SOURCES.md).
SAMPLE = (
    Path(__file__).resolve().parent
    / "fixtures"
    / "deribit_btc_option_trades_SAMPLE_2026-08-16.parquet"
)


@pytest.fixture(scope="module")
def raw() -> pl.DataFrame:
    return pl.read_parquet(SAMPLE)


def with_cell(frame: pl.DataFrame, column: str, row: int, value) -> pl.DataFrame:
    cell = pl.lit(value, dtype=frame.schema[column])
    changed = pl.when(pl.int_range(pl.len()) == row).then(cell).otherwise(pl.col(column))
    return frame.with_columns(changed.alias(column))


def test_sample_imports_as_flow(raw):
    flow = import_deribit_trades(SAMPLE)
    assert dict(flow.schema) == FLOW_SCHEMA
    assert flow.height == 277
    assert flow["ts"].is_sorted()
    assert flow["expiry"].unique().to_list() == [datetime(2026, 8, 17, 8, tzinfo=UTC)]
    assert (flow["side"] == -1).sum() == 175 and (flow["side"] == 1).sum() == 102
    # The sample is already in time order, so rows line up with the export.
    names = raw["instrument_name"].str.split("-")
    assert flow["strike"].to_list() == [float(n[2]) for n in names]
    assert flow["kind"].to_list() == [n[3] for n in names]
    assert flow["strike"].equals(raw["strike_usd"], check_names=False)
    assert flow["side"].to_list() == [1 if d == "buy" else -1 for d in raw["direction"]]
    assert flow["size"].equals(raw["amount"], check_names=False)
    assert flow["ts"].equals(raw["ts"])


def test_csv_and_naive_timestamps_read_the_same(raw, tmp_path):
    expected = import_deribit_trades(SAMPLE)
    raw.write_csv(tmp_path / "trades.csv")
    assert import_deribit_trades(tmp_path / "trades.csv").equals(expected)
    naive = raw.with_columns(pl.col("ts", "expiry").dt.replace_time_zone(None))
    naive.write_parquet(tmp_path / "naive.parquet")
    assert import_deribit_trades(tmp_path / "naive.parquet").equals(expected)


def test_unsorted_export_is_sorted_by_ts(raw, tmp_path):
    raw.reverse().write_parquet(tmp_path / "reversed.parquet")
    flow = import_deribit_trades(tmp_path / "reversed.parquet")
    assert flow["ts"].is_sorted()
    assert flow.sort(pl.all()).equals(import_deribit_trades(SAMPLE).sort(pl.all()))


@pytest.mark.parametrize(
    ("column", "row", "value", "problem"),
    [
        ("instrument_name", 5, "BTC-17AUG26-63000-X", "cannot parse"),
        ("instrument_name", 6, "BTC-31FEB26-63000-P", "cannot parse"),
        ("instrument_name", 7, "BTC-10AUG26-63000-P", "expires at or before the trade"),
        ("direction", 8, "hold", "not 'buy' or 'sell'"),
        ("amount", 9, 0.0, "not a positive size"),
        ("amount", 10, float("nan"), "not a finite number"),
        ("strike_usd", 11, 12345.0, "disagrees with instrument_name"),
        ("option_type", 12, "X", "disagrees with instrument_name"),
        ("expiry", 13, datetime(2026, 8, 18, 8, tzinfo=UTC), "disagrees with instrument_name"),
        ("ts", 14, None, "not a timestamp"),
    ],
)
def test_bad_cell_names_column_and_row(raw, tmp_path, column, row, value, problem):
    path = tmp_path / "broken.parquet"
    with_cell(raw, column, row, value).write_parquet(path)
    with pytest.raises(InputError, match=rf"column '{column}', row {row}: .*{problem}"):
        import_deribit_trades(path)


def test_bad_text_in_csv_names_column_and_row(raw, tmp_path):
    path = tmp_path / "broken.csv"
    text = raw.with_columns(pl.all().cast(pl.String))
    with_cell(text, "amount", 3, "lots").write_csv(path)
    with pytest.raises(InputError, match=r"column 'amount', row 3: not a finite number: 'lots'"):
        import_deribit_trades(path)


@pytest.mark.parametrize("column", REQUIRED)
def test_missing_column_is_named(raw, tmp_path, column):
    path = tmp_path / "short.parquet"
    raw.drop(column).write_parquet(path)
    with pytest.raises(InputError, match=rf"column '{column}': missing column"):
        import_deribit_trades(path)


def test_unreadable_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="cannot read"):
        import_deribit_trades(tmp_path / "absent.parquet")
