"""`dhlp data stats`: realised variance by hour of the week, by hand on markets whose every
return is known, and the weekend ratio a variance clock would be set from."""

from __future__ import annotations

import datetime as dt
import json
import math

import numpy as np
import polars as pl
import pytest
from test_bad_input import assert_one_line_error, run_cli, write

from backtest.inputs.market import market_from_frames, validate_market
from backtest.inputs.stats import HOURS_PER_WEEK, hour_of_week, variance_by_hour

MONDAY = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)  # a Monday, 00:00 UTC
HOUR_YEARS = 3600 / (365 * 86_400)


def market(hours, spots) -> pl.DataFrame:
    ts = [MONDAY + dt.timedelta(hours=float(h)) for h in hours]
    return pl.DataFrame({"ts": ts, "spot": spots, "iv": 0.6}).with_columns(
        pl.col("ts").cast(pl.Datetime("us", "UTC"))
    )


def as_market(frame: pl.DataFrame):
    return market_from_frames([validate_market(frame, "test", 0.0)], "test")


def test_hour_of_week_against_the_calendar():
    rng = np.random.default_rng(1)
    stamps = rng.integers(0, 2_000_000_000, 500) * 1_000_000_000
    days = pl.Series(stamps).cast(pl.Datetime("ns", "UTC"))
    expected = (days.dt.weekday().cast(pl.Int64) - 1) * 24 + days.dt.hour()  # Monday = 1
    assert hour_of_week(stamps).tolist() == expected.to_list()


def test_weekday_and_weekend_returns_by_hand():
    """Four weeks of hourly ticks: every weekday hour moves the log price by +-a, every weekend
    hour by +-b. Each hour of the week's variance is its move squared over an hour, and the
    weekend ratio is (b / a)^2."""
    a, b = 0.01, 0.006
    hours = np.arange(4 * HOURS_PER_WEEK + 1)
    starts = hours[:-1] % HOURS_PER_WEEK
    moves = np.where(starts >= 120, b, a) * np.where(hours[:-1] % 2 == 0, 1.0, -1.0)
    spots = 2000.0 * np.exp(np.concatenate([[0.0], np.cumsum(moves)]))
    stats = variance_by_hour(as_market(market(hours, spots)))
    assert stats.n_returns == 4 * HOURS_PER_WEEK
    by_hour = stats.by_hour
    assert by_hour["returns"].to_list() == [4] * HOURS_PER_WEEK
    expected = np.where(np.arange(HOURS_PER_WEEK) >= 120, b * b, a * a) / HOUR_YEARS
    np.testing.assert_allclose(by_hour["variance"].to_numpy(), expected, rtol=1e-9)
    assert stats.weekday_variance == pytest.approx(a * a / HOUR_YEARS, rel=1e-9)
    assert stats.weekend_ratio == pytest.approx((b / a) ** 2, rel=1e-9)
    grid = stats.vol_grid(4)
    assert grid.shape == (7, 6)
    np.testing.assert_allclose(grid[:5], a / math.sqrt(HOUR_YEARS), rtol=1e-9)
    np.testing.assert_allclose(grid[5:], b / math.sqrt(HOUR_YEARS), rtol=1e-9)


def test_a_gap_counts_its_move_over_its_length_in_the_hour_it_starts():
    """Ticks at Monday 00:00, 01:00 and 04:00: the second return spans three hours and belongs
    to 01:00; its variance is its square over three hours."""
    stats = variance_by_hour(as_market(market([0, 1, 4], [100.0, 101.0, 99.0])))
    rows = {r["hour_of_week"]: r for r in stats.by_hour.iter_rows(named=True)}
    assert set(rows) == {0, 1}
    assert rows[1]["years"] == pytest.approx(3 * HOUR_YEARS, rel=1e-12)
    assert rows[1]["variance"] == pytest.approx(math.log(99 / 101) ** 2 / (3 * HOUR_YEARS))
    assert math.isnan(stats.weekend_variance)  # no weekend return at all


def test_the_cli_prints_the_ratio_and_refuses_a_bad_file(tmp_path):
    hours = np.arange(2 * HOURS_PER_WEEK + 1)
    rng = np.random.default_rng(3)
    spots = 2000.0 * np.exp(np.cumsum(rng.normal(0, 0.01, hours.size)))
    path = write(market(hours, spots), tmp_path / "m.parquet")
    code, output = run_cli("data", "stats", str(path), "--json")
    assert code == 0, output
    shown = json.loads(output)
    stats = variance_by_hour(as_market(market(hours, spots)))
    assert shown["weekend_ratio"] == pytest.approx(stats.weekend_ratio, rel=1e-12)
    assert len(shown["by_hour_of_week"]) == HOURS_PER_WEEK
    code, output = run_cli("data", "stats", str(path))
    assert code == 0 and "weekend ratio" in output and "Sat" in output
    bad = write(market(hours, spots).with_columns(spot=pl.lit(-1.0)), tmp_path / "bad.parquet")
    code, output = run_cli("data", "stats", str(bad))
    assert_one_line_error(code, output, "column 'spot'")
