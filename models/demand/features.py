"""Demand features: one declaration builds the training matrix, the batch-scoring rows and the
rows a served forecast needs.

Every history feature of the row for day t ends at least `horizon` days before t, so one model
forecasts every day of the horizon from the same origin (no recursion). Features are computed
on a dense panel — a (series × days) matrix of units sold, NaN where the store was closed or the
SKU not ranged — so lags are column shifts and rolling means are differences of cumulative sums.
Names derive from parameters, as in mlforecast: `lag28`, `rolling_mean_lag28_window7`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

EVENTS = ("618", "double11", "double12", "cny", "valentines", "qixi", "womens_day", "golden_week", "mid_autumn")
PHASES = ("presale", "peak", "post", "closure", "holiday")
EVENT_REACH_DAYS = 45  # days-to / days-since an event are clipped here
CATEGORICAL = ("store_id", "channel", "platform", "format", "city", "category", "subcategory", "style", "price_band")


class FeatureSpec(BaseModel):
    """What the demand model sees. Part of `configs/demand.yaml`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    horizon: int = Field(28, ge=1, le=91, description="days ahead; every history feature ends this far back")
    lags: tuple[int, ...] = Field((28, 35, 42, 49, 56), description="units sold this many days before")
    rolling_windows: tuple[int, ...] = Field((7, 28, 56), description="mean units over windows ending `horizon` back")

    @model_validator(mode="after")
    def _horizon_safe(self) -> "FeatureSpec":
        short = [k for k in self.lags if k < self.horizon]
        if short:
            raise ValueError(f"lags {short} are shorter than the horizon {self.horizon}: they would not be known "
                             "when forecasting the last day of the horizon")
        return self

    @property
    def history_days(self) -> int:
        """How many days of history the features of one forecast origin need."""
        return max([*self.lags, self.horizon + max(self.rolling_windows, default=0)])

    def history_feature_names(self) -> list[str]:
        names = [f"lag{k}" for k in self.lags]
        names += [f"rolling_mean_lag{self.horizon}_window{w}" for w in self.rolling_windows]
        names += [f"sku_rolling_mean_lag{self.horizon}_window28", f"store_rolling_mean_lag{self.horizon}_window28",
                  "days_since_first_sale"]
        return names


@dataclass
class Panel:
    """Units sold per series and day: `units[i, j]` for series i on `start + j` days; NaN where
    the series had no row (store closed, SKU not ranged, not launched)."""

    series: pd.DataFrame  # store_id, sku_id (row i of the matrices)
    start: dt.date
    units: np.ndarray  # float32 (n_series, n_days)

    @property
    def days(self) -> int:
        return self.units.shape[1]

    def date_index(self, day: dt.date) -> int:
        return (day - self.start).days

    def tail(self, days: int) -> "Panel":
        """The last `days` days (what serving keeps)."""
        cut = max(0, self.days - days)
        return Panel(self.series, self.start + dt.timedelta(days=cut), self.units[:, cut:])


def build_panel(demand: pd.DataFrame) -> Panel:
    """The dense panel from curated demand_daily rows (store_id, sku_id, dt, units_sold)."""
    days = pd.to_datetime(demand["dt"])
    start = days.min().date()
    n_days = (days.max().date() - start).days + 1
    keys = demand[["store_id", "sku_id"]].drop_duplicates().sort_values(["store_id", "sku_id"], ignore_index=True)
    row = pd.MultiIndex.from_frame(keys).get_indexer(pd.MultiIndex.from_frame(demand[["store_id", "sku_id"]]))
    col = (days - pd.Timestamp(start)).dt.days.to_numpy()
    units = np.full((len(keys), n_days), np.nan, dtype=np.float32)
    units[row, col] = demand["units_sold"].to_numpy(dtype=np.float32)
    return Panel(keys, start, units)


def _shift(matrix: np.ndarray, k: int) -> np.ndarray:
    """matrix shifted right by k days (value of day j is day j−k's), NaN where unknown."""
    out = np.full_like(matrix, np.nan)
    if k < matrix.shape[1]:
        out[:, k:] = matrix[:, : matrix.shape[1] - k]
    return out


def _rolling_mean(matrix: np.ndarray, window: int, lag: int) -> np.ndarray:
    """Mean of the non-missing values over days [j−lag−window+1, j−lag]; NaN if none."""
    filled = np.nan_to_num(matrix)
    present = (~np.isnan(matrix)).astype(np.float32)
    zero = np.zeros((matrix.shape[0], 1), np.float32)
    csum = np.concatenate([zero, np.cumsum(filled, axis=1)], axis=1)
    ccount = np.concatenate([zero, np.cumsum(present, axis=1)], axis=1)
    n = matrix.shape[1]
    end = np.arange(n) - lag + 1  # exclusive end index into the cumulative arrays
    begin = np.clip(end - window, 0, None)
    end = np.clip(end, 0, None)
    total = csum[:, end] - csum[:, begin]
    count = ccount[:, end] - ccount[:, begin]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan).astype(np.float32)


def history_features(panel: Panel, spec: FeatureSpec) -> dict[str, np.ndarray]:
    """Every history feature as a (series × days) matrix aligned with the panel's days."""
    u = panel.units
    out: dict[str, np.ndarray] = {f"lag{k}": _shift(u, k) for k in spec.lags}
    for w in spec.rolling_windows:
        out[f"rolling_mean_lag{spec.horizon}_window{w}"] = _rolling_mean(u, w, spec.horizon)
    # the SKU's mean rate across all stores and the store's mean rate across its SKUs carry
    # information to series with little history of their own (new stores, new SKUs elsewhere)
    for level, name in (("sku_id", "sku"), ("store_id", "store")):
        codes, uniques = pd.factorize(panel.series[level])
        groups = np.zeros((len(uniques), panel.days), np.float32)
        counts = np.zeros_like(groups)
        np.add.at(groups, codes, np.nan_to_num(u))
        np.add.at(counts, codes, (~np.isnan(u)).astype(np.float32))
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = np.where(counts > 0, groups / counts, np.nan)
        out[f"{name}_rolling_mean_lag{spec.horizon}_window28"] = _rolling_mean(rate, 28, spec.horizon)[codes]
    sold = np.nan_to_num(u) > 0
    first = np.where(sold.any(axis=1), sold.argmax(axis=1), panel.days + 10_000)
    since = np.arange(panel.days)[None, :] - spec.horizon - first[:, None]
    out["days_since_first_sale"] = np.where(since >= 0, since, np.nan).astype(np.float32)
    return out


def calendar_features(days: pd.Series, calendar: pd.DataFrame) -> pd.DataFrame:
    """Date and retail-event features of each day: weekday, day of year, days to and since each
    event (clipped at EVENT_REACH_DAYS), the event phase of the day."""
    d = pd.to_datetime(days).reset_index(drop=True)
    out = pd.DataFrame({"day_of_week": d.dt.dayofweek.astype("int8"), "day_of_year": d.dt.dayofyear.astype("int16"),
                        "month": d.dt.month.astype("int8"), "day_of_month": d.dt.day.astype("int8")})
    cal = calendar.assign(date=pd.to_datetime(calendar["date"]))
    ordinal = d.to_numpy().astype("datetime64[D]").astype(np.int64)
    for event in EVENTS:
        event_days = np.sort(cal.loc[cal["event"] == event, "date"].to_numpy().astype("datetime64[D]").astype(np.int64))
        if event_days.size == 0:
            out[f"days_to_{event}"] = np.float32(EVENT_REACH_DAYS)
            out[f"days_since_{event}"] = np.float32(EVENT_REACH_DAYS)
            continue
        nxt = np.searchsorted(event_days, ordinal, side="left")
        prv = np.searchsorted(event_days, ordinal, side="right") - 1
        to = np.where(nxt < event_days.size, event_days[np.minimum(nxt, event_days.size - 1)] - ordinal, EVENT_REACH_DAYS)
        since = np.where(prv >= 0, ordinal - event_days[np.maximum(prv, 0)], EVENT_REACH_DAYS)
        out[f"days_to_{event}"] = np.minimum(to, EVENT_REACH_DAYS).astype(np.float32)
        out[f"days_since_{event}"] = np.minimum(since, EVENT_REACH_DAYS).astype(np.float32)
    phase_of_day = cal.groupby("date")["phase"].agg(lambda p: sorted(set(p)))
    phases = d.map(phase_of_day)
    for phase in PHASES:
        out[f"phase_{phase}"] = phases.map(lambda p, phase=phase: isinstance(p, list) and phase in p).astype("int8")
    return out
