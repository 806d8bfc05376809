"""Deribit option-trade exports (Parquet or CSV) as a flow table.

The instrument name (`BTC-17AUG26-63000-P`) is the source of truth for expiry, strike and kind;
the export's own `expiry`, `strike_usd` and `option_type` columns, when present, must agree with
it. `direction` is the taker's side, which is the trader's side in the flow table.
"""

from datetime import timedelta
from pathlib import Path

import polars as pl

from backtest.errors import InputError
from backtest.inputs.flow import FLOW_SCHEMA
from backtest.inputs.synthetic_flow import EXPIRY_HOUR

REQUIRED = ("ts", "instrument_name", "direction", "amount")
# underlying - expiry day/month/year - strike ("d" is the decimal point, e.g. 0d625) - C/P
INSTRUMENT = r"^[A-Z0-9_]+-(\d{1,2}[A-Z]{3}\d{2})-(\d+(?:d\d+)?)-([CP])$"
SIDES = {"buy": 1, "sell": -1}
OPTION_TYPES = {"C": "C", "CALL": "C", "P": "P", "PUT": "P"}


def _read(path: Path) -> pl.DataFrame:
    """CSV is read as text so a bad cell is reported by row below, not as a parser error."""
    try:
        if path.suffix.lower() == ".csv":
            return pl.read_csv(path, infer_schema=False)
        return pl.read_parquet(path)
    except (OSError, pl.exceptions.PolarsError) as exc:
        problem = f"cannot read: {exc}".splitlines()[0]
        raise InputError.at(str(path), None, None, problem) from None


def _reject_first(
    bad: pl.Series, raw: pl.DataFrame, source: str, column: str, problem: str
) -> None:
    """Raise for the first row where `bad` holds (null counts as bad).

    `problem` may name the cell as `{value}` and the row's instrument as `{name}`.
    """
    rows = bad.fill_null(True).arg_true()
    if rows.len():
        row = rows[0]
        value, name = raw[column][row], raw["instrument_name"][row]
        raise InputError.at(source, column, row, problem.format(value=value, name=name))


def _timestamps(raw: pl.DataFrame, source: str, column: str) -> pl.Series:
    """Timestamps as UTC µs: text is parsed, naive datetimes are taken as UTC."""
    values = raw[column]
    if values.dtype == pl.String:
        parsed = values.str.to_datetime(time_unit="us", time_zone="UTC", strict=False)
    elif isinstance(values.dtype, pl.Datetime):
        zoned = values.dt.convert_time_zone("UTC") if values.dtype.time_zone else values
        parsed = zoned.dt.replace_time_zone("UTC").dt.cast_time_unit("us")
    else:
        raise InputError.at(source, column, None, f"must be a timestamp, not {values.dtype}")
    _reject_first(parsed.is_null(), raw, source, column, "not a timestamp: {value!r}")
    return parsed


def _numbers(raw: pl.DataFrame, source: str, column: str) -> pl.Series:
    values = raw[column].cast(pl.Float64, strict=False)
    _reject_first(~values.is_finite(), raw, source, column, "not a finite number: {value!r}")
    return values


def _option_types(values: pl.Series) -> pl.Series:
    """Exports spell the type C/P or call/put."""
    spelled = values.cast(pl.String).str.strip_chars().str.to_uppercase()
    return spelled.replace_strict(OPTION_TYPES, default=None)


def import_deribit_trades(path: str | Path) -> pl.DataFrame:
    """Read a Deribit option-trades export into the flow table (no `informed`), sorted by ts."""
    path = Path(path)
    source = str(path)
    raw = _read(path)
    for column in REQUIRED:
        if column not in raw.columns:
            raise InputError.at(source, column, None, "missing column")

    ts = _timestamps(raw, source, "ts")
    parts = raw["instrument_name"].cast(pl.String).str.extract_groups(INSTRUMENT)
    day = parts.struct.field("1").str.strptime(pl.Date, "%d%b%y", strict=False)
    strike = parts.struct.field("2").str.replace("d", ".", literal=True).cast(pl.Float64)
    kind = parts.struct.field("3")
    unparsed = day.is_null() | ~(strike > 0)
    problem = "cannot parse {value!r} (want e.g. BTC-17AUG26-63000-P)"
    _reject_first(unparsed, raw, source, "instrument_name", problem)
    expiry = day.cast(pl.Datetime("us", "UTC")) + timedelta(hours=EXPIRY_HOUR)
    _reject_first(
        expiry <= ts, raw, source, "instrument_name", "{value!r} expires at or before the trade"
    )

    cross_checks = {
        "expiry": lambda: _timestamps(raw, source, "expiry") != expiry,
        "strike_usd": lambda: (_numbers(raw, source, "strike_usd") - strike).abs() > 1e-9 * strike,
        "option_type": lambda: _option_types(raw["option_type"]) != kind,
    }
    for column, disagrees in cross_checks.items():
        if column in raw.columns:
            problem = "{value!r} disagrees with instrument_name {name!r}"
            _reject_first(disagrees(), raw, source, column, problem)

    direction = raw["direction"].cast(pl.String).str.strip_chars().str.to_lowercase()
    side = direction.replace_strict(SIDES, default=None, return_dtype=pl.Int8)
    _reject_first(side.is_null(), raw, source, "direction", "{value!r} is not 'buy' or 'sell'")

    size = _numbers(raw, source, "amount")
    _reject_first(size <= 0, raw, source, "amount", "{value!r} is not a positive size")

    flow = pl.DataFrame(
        {"ts": ts, "expiry": expiry, "strike": strike, "kind": kind, "side": side, "size": size},
        schema=FLOW_SCHEMA,
    )
    return flow.sort("ts", maintain_order=True)
