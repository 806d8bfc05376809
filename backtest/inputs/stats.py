"""Realised variance by hour of the week: what a variance clock's weekend weight should be.

Deribit's DVOL, the bundled implied vol, is a 30-day, calendar-time index; realised variance is
not spread evenly over calendar time (crypto trades through weekends, but far less happens in
them). Each log return from tick t-1 to t is the move of the hour of the week its interval
starts in (ticks are stamped at bar end, so ts[t-1] is when the bar began); a bucket's
variance is sum(r^2) / sum(dt), annualised, so uneven ticks and gaps weigh by their length.
The weekend is Saturday 00:00 to Monday 00:00 UTC (48 of the week's 168 hours).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from backtest.inputs.market import Market

NS_PER_HOUR = 3_600 * 1_000_000_000
HOURS_PER_WEEK = 168
SECONDS_PER_YEAR = 365 * 86_400
WEEKEND_FROM = 5 * 24  # hour of the week (Monday 00:00 = 0) at which Saturday begins
EPOCH_MONDAY_HOUR = 3 * 24  # 1970-01-01 was a Thursday: hour 72 of its week


@dataclass(frozen=True)
class VarianceStats:
    """Realised variance by hour of the week, and what it says about weekends."""

    by_hour: pl.DataFrame  # hour_of_week (0 = Monday 00-01 UTC), returns, years, variance, vol
    weekday_variance: float  # annualised, over Monday 00:00 - Saturday 00:00
    weekend_variance: float  # annualised, over Saturday 00:00 - Monday 00:00
    mean_iv: float  # the file's mean implied vol over the same returns' starting ticks
    n_returns: int

    def vol_grid(self, block_hours: int) -> np.ndarray:
        """Annualised realised vol per day of the week (rows, Monday first) and block of
        block_hours hours of the day (columns, UTC); NaN where no return fell."""
        hour = self.by_hour["hour_of_week"].to_numpy()
        cell = (hour // 24) * (24 // block_hours) + (hour % 24) // block_hours
        r2 = np.zeros(7 * 24 // block_hours)
        years = np.zeros_like(r2)
        np.add.at(r2, cell, (self.by_hour["variance"] * self.by_hour["years"]).to_numpy())
        np.add.at(years, cell, self.by_hour["years"].to_numpy())
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.sqrt(r2 / years).reshape(7, 24 // block_hours)

    @property
    def weekend_ratio(self) -> float:
        """A weekend hour's variance over a weekday hour's: a variance clock's weekend_weight."""
        return self.weekend_variance / self.weekday_variance


def hour_of_week(ts_ns: np.ndarray) -> np.ndarray:
    """0 for Monday 00:00-01:00 UTC ... 167 for Sunday 23:00-24:00."""
    return (ts_ns // NS_PER_HOUR + EPOCH_MONDAY_HOUR) % HOURS_PER_WEEK


def variance_by_hour(market: Market) -> VarianceStats:
    """Realised variance per hour of the week over every path's returns."""
    starts, squares, years, ivs = [], [], [], []
    for k in range(market.n_paths):
        ticks = market.path(k)
        ts, spot = market.ts[ticks], market.spot[ticks]
        starts.append(ts[:-1])
        squares.append(np.diff(np.log(spot)) ** 2)
        years.append(np.diff(ts) / 1e9 / SECONDS_PER_YEAR)
        ivs.append(market.iv[ticks][:-1])
    frame = pl.DataFrame(
        {
            "hour_of_week": hour_of_week(np.concatenate(starts)),
            "r2": np.concatenate(squares),
            "years": np.concatenate(years),
        }
    )
    by_hour = (
        frame.group_by("hour_of_week")
        .agg(returns=pl.len(), r2=pl.col("r2").sum(), years=pl.col("years").sum())
        .sort("hour_of_week")
        .with_columns(variance=pl.col("r2") / pl.col("years"))
        .with_columns(vol=pl.col("variance").sqrt())
    )
    weekend = pl.col("hour_of_week") >= WEEKEND_FROM

    def pooled(rows: pl.DataFrame) -> float:
        return float(rows["r2"].sum() / rows["years"].sum()) if rows.height else float("nan")

    return VarianceStats(
        by_hour=by_hour.drop("r2"),
        weekday_variance=pooled(by_hour.filter(~weekend)),
        weekend_variance=pooled(by_hour.filter(weekend)),
        mean_iv=float(np.concatenate(ivs).mean()),
        n_returns=frame.height,
    )
