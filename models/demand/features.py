"""Demand features: one declaration builds the training matrix, the batch-scoring rows and the
rows a served forecast needs.

A forecast is made at an origin (the last day with data) for each day of the horizon. Every
history feature of a row is computed *as of its origin* — the means of the last 7/28/56 days,
the same weekday in the last weeks before the origin, the SKU's sales across stores since launch
— and the horizon (days from origin to target) is itself a feature. One model therefore serves
every day of the horizon without recursion, and a SKU launched ten days before the origin brings
its ten days of sales. Training rows draw their horizon at random (seeded), so the training
matrix has one row per series and day, like the data. Features are computed on a dense panel —
a (series × days) matrix of units sold, NaN where the store was closed or the SKU not ranged —
so they are column gathers and differences of cumulative sums.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from collections.abc import Mapping
from functools import cached_property
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.metrics import series_codes

PHASES = ("presale", "peak", "post", "closure", "holiday")
DATE_OF_YEAR = ("day_of_year", "month", "day_of_month")  # features that only a history of a year can teach
INTERMITTENCY = ("tsb_level", "zero_share_28d", "days_since_last_sale")
TSB_ALPHA = TSB_BETA = 0.1  # smoothing of the TSB (Teunter–Syntetos–Babai) level: size and probability of a sale
EVENT_REACH_DAYS = 45  # days-to / days-since an event are clipped here
MAX_HORIZON_DAYS = 91  # the longest forecast a demand config may ask for (and the API accepts)
CATEGORICAL = ("store_id", "channel", "platform", "format", "city", "category", "subcategory", "style", "price_band")
SKU_ATTRIBUTES = ("category", "subcategory", "style", "price_band")


class FeatureSpec(BaseModel):
    """What the demand model sees. Part of `configs/demand.yaml`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    horizon: int = Field(28, ge=1, le=MAX_HORIZON_DAYS, description="days ahead a forecast reaches")
    windows: tuple[int, ...] = Field((7, 28, 56), description="mean units over the last N days before the origin")
    same_weekday_weeks: int = Field(4, ge=0, le=8, description="units on the target's weekday in the last N weeks")
    intermittency: bool = Field(True, description="TSB level, share of zero days, days since the last sale: "
                                "what intermittent series are forecast from")
    launch_age_cap_days: int | None = Field(56, ge=1, description="days since launch count up to this, so the "
                                            "feature tells young items apart and is no clock for the rest; "
                                            "None: uncapped")
    date_of_year: Literal["auto", "always", "never"] = Field(
        "auto", description="day of year, month and day of month as features: auto keeps them only when the "
        "training history spans a year before every forecast day (else they memorise dates that do not recur)")

    @model_validator(mode="after")
    def _positive(self) -> "FeatureSpec":
        if any(w < 1 for w in self.windows):
            raise ValueError(f"windows must be at least 1 day, got {list(self.windows)}")
        return self

    @property
    def history_days(self) -> int:
        """How many days before the origin the features of one forecast read."""
        return max([*self.windows, 7 * self.same_weekday_weeks, 28])

    def history_feature_names(self) -> list[str]:
        names = [f"mean_{w}d" for w in self.windows]
        names += [f"same_weekday_{k}w" for k in range(1, self.same_weekday_weeks + 1)]
        names += ["last_day", "sku_mean_28d", "store_mean_28d", "sku_mean_since_launch", "days_since_first_sale"]
        if self.intermittency:
            names += list(INTERMITTENCY)
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

    @cached_property
    def index(self) -> pd.MultiIndex:
        """The series as a (store_id, sku_id) index: get_indexer finds a row's series."""
        return pd.MultiIndex.from_frame(self.series[["store_id", "sku_id"]])

    @cached_property
    def positions(self) -> dict[tuple[str, str], int]:
        """Row of each (store_id, sku_id): looking up a few pairs in a dict costs microseconds
        where a MultiIndex lookup costs half a millisecond (a served forecast asks for a few)."""
        return {pair: i for i, pair in enumerate(zip(self.series["store_id"].tolist(), self.series["sku_id"].tolist()))}


def build_panel(demand: pd.DataFrame) -> Panel:
    """The dense panel from curated demand_daily rows (store_id, sku_id, dt, units_sold)."""
    days = pd.to_datetime(demand["dt"])
    start = days.min().date()
    n_days = (days.max().date() - start).days + 1
    row, keys = series_codes(demand)
    col = (days - pd.Timestamp(start)).dt.days.to_numpy()
    units = np.full((len(keys), n_days), np.nan, dtype=np.float32)
    units[row, col] = demand["units_sold"].to_numpy(dtype=np.float32)
    return Panel(keys, start, units)


def _trailing_mean(matrix: np.ndarray, window: int) -> np.ndarray:
    """Mean of the non-missing values over days [j−window+1, j] for every day j; NaN if none."""
    filled = np.nan_to_num(matrix)
    present = (~np.isnan(matrix)).astype(np.float32)
    zero = np.zeros((matrix.shape[0], 1), np.float32)
    csum = np.concatenate([zero, np.cumsum(filled, axis=1, dtype=np.float64)], axis=1)
    ccount = np.concatenate([zero, np.cumsum(present, axis=1)], axis=1)
    end = np.arange(1, matrix.shape[1] + 1)
    begin = np.clip(end - window, 0, None)
    total = csum[:, end] - csum[:, begin]
    count = ccount[:, end] - ccount[:, begin]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan).astype(np.float32)


@dataclass
class History:
    """History features as of every panel day: per series, per SKU and per store matrices."""

    series: dict[str, np.ndarray]  # (n_series, days), rows as panel.series
    sku: dict[str, np.ndarray]  # (n_skus, days), rows as sku_index
    store: dict[str, np.ndarray]  # (n_stores, days), rows as store_index
    sku_index: pd.Index
    store_index: pd.Index


def intermittency_features(units: np.ndarray) -> dict[str, np.ndarray]:
    """As of every day: the TSB forecast (probability of a sale × size of a sale, each smoothed
    exponentially over the days with a row, from the series' first row), the share of zero days
    among the last 28 with a row, and the days since the last sale (NaN before the first)."""
    n, days = units.shape
    tsb = np.full((n, days), np.nan, np.float32)
    probability, size = np.full(n, np.nan), np.full(n, np.nan)
    last_sale = np.full(n, np.nan)
    since_sale = np.full((n, days), np.nan, np.float32)
    for t in range(days):
        y = units[:, t]
        live = ~np.isnan(y)
        sale = live & (y > 0)
        probability = np.where(live & np.isnan(probability), sale.astype(float),
                               np.where(live, probability + TSB_BETA * (sale - probability), probability))
        size = np.where(sale & np.isnan(size), y, np.where(sale, size + TSB_ALPHA * (y - size), size))
        tsb[:, t] = probability * np.nan_to_num(size)
        last_sale = np.where(sale, t, last_sale)
        since_sale[:, t] = t - last_sale
    zero = np.where(np.isnan(units), np.nan, (units == 0).astype(np.float32))
    return {"tsb_level": tsb, "zero_share_28d": _trailing_mean(zero, 28), "days_since_last_sale": since_sale}


def _group_rate(panel: Panel, level: str) -> tuple[np.ndarray, pd.Index]:
    """Mean units per series of the same `level` (sku_id or store_id) on each day."""
    codes, uniques = pd.factorize(panel.series[level])
    u = panel.units
    totals = np.zeros((len(uniques), panel.days), np.float64)
    counts = np.zeros_like(totals)
    np.add.at(totals, codes, np.nan_to_num(u))
    np.add.at(counts, codes, (~np.isnan(u)).astype(np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(counts > 0, totals / counts, np.nan).astype(np.float32)
    return rate, pd.Index(uniques)


def history_features(panel: Panel, spec: FeatureSpec) -> History:
    """History features as of each panel day taken as origin. Same-weekday lags are not here:
    they depend on the target day (see feature_columns)."""
    u = panel.units
    series: dict[str, np.ndarray] = {f"mean_{w}d": _trailing_mean(u, w) for w in spec.windows}
    series["last_day"] = u
    sold = np.nan_to_num(u) > 0
    first = np.where(sold.any(axis=1), sold.argmax(axis=1), panel.days + 10_000)
    since = np.arange(panel.days)[None, :] - first[:, None]
    series["days_since_first_sale"] = np.where(since >= 0, since, np.nan).astype(np.float32)
    if spec.intermittency:
        series.update(intermittency_features(u))
    sku_rate, sku_index = _group_rate(panel, "sku_id")
    store_rate, store_index = _group_rate(panel, "store_id")
    # the SKU's mean rate across its stores since its first sale anywhere: what a new SKU has shown
    sold_any = np.nan_to_num(sku_rate) > 0
    first_any = np.where(sold_any.any(axis=1), sold_any.argmax(axis=1), panel.days)
    csum = np.cumsum(np.nan_to_num(sku_rate), axis=1, dtype=np.float64)
    age = np.arange(panel.days)[None, :] - first_any[:, None] + 1
    with np.errstate(invalid="ignore", divide="ignore"):
        since_launch = np.where(age > 0, csum / age, np.nan).astype(np.float32)
    return History(series=series,
                   sku={"sku_mean_28d": _trailing_mean(sku_rate, 28), "sku_mean_since_launch": since_launch},
                   store={"store_mean_28d": _trailing_mean(store_rate, 28)},
                   sku_index=sku_index, store_index=store_index)


def event_feature_name(event: str) -> str:
    """The name an event's features carry: its calendar name, lower-case, with anything but
    letters, digits and underscores turned into underscores ("Black Friday" → black_friday)."""
    return re.sub(r"[^0-9a-z_]+", "_", str(event).strip().lower()).strip("_") or "event"


def calendar_features(days: pd.Series, calendar: pd.DataFrame) -> pd.DataFrame:
    """Date and event features of each day: weekday, day of year, days to and since each event
    the lake's calendar lists (clipped at EVENT_REACH_DAYS), the event phase of the day. The
    events are whatever the brand's calendar names (618 and double11 for the generator's brand,
    black_friday or boxing_day for another); a lake without a calendar gets date features only."""
    d = pd.to_datetime(days).reset_index(drop=True)
    out = pd.DataFrame({"day_of_week": d.dt.dayofweek.astype("int8"), "day_of_year": d.dt.dayofyear.astype("int16"),
                        "month": d.dt.month.astype("int8"), "day_of_month": d.dt.day.astype("int8")})
    cal = calendar.assign(date=pd.to_datetime(calendar["date"]), name=calendar["event"].map(event_feature_name))
    ordinal = d.to_numpy().astype("datetime64[D]").astype(np.int64)
    for event, rows in sorted(cal.groupby("name")):
        event_days = np.unique(rows["date"].to_numpy().astype("datetime64[D]").astype(np.int64))
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


@dataclass
class Attributes:
    """Static product and store attributes, and the retail calendar, that features join. The
    indexed views and the calendar features are built once per instance and reused: a served
    forecast joins a few rows, and rebuilding them per request cost more than the rest."""

    products: pd.DataFrame  # sku_id, category, list_price, launch_date, optional subcategory/style
    stores: pd.DataFrame  # store_id, channel, optional platform/format/city/open_date
    calendar: pd.DataFrame  # date, event, phase
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def products_by_sku(self) -> pd.DataFrame:
        if "products" not in self._cache:
            self._cache["products"] = self.products.assign(price_band=_price_band(self.products)).set_index("sku_id")
        return self._cache["products"]

    def stores_by_id(self) -> pd.DataFrame:
        if "stores" not in self._cache:
            self._cache["stores"] = self.stores.set_index("store_id")
        return self._cache["stores"]

    def category_price(self) -> pd.Series:
        if "category_price" not in self._cache:
            self._cache["category_price"] = self.products_by_sku().groupby("category")["list_price"].median()
        return self._cache["category_price"]

    def lookup(self, level: str) -> tuple[pd.Index, dict[str, np.ndarray]]:
        """The per-SKU (`level` sku_id) or per-store (store_id) values the features read, as
        arrays aligned with an index of the keys and one extra last entry, missing, which an
        unknown key's position −1 picks."""
        if level not in self._cache:
            table = self.products_by_sku() if level == "sku_id" else self.stores_by_id()
            columns: dict[str, np.ndarray] = {}
            for name in table.columns:
                values = table[name].astype("object").where(table[name].notna(), None).to_numpy()
                columns[name] = np.append(values, None)
            if level == "sku_id":
                launch = pd.to_datetime(table["launch_date"])
                columns["list_price"] = np.append(table["list_price"].to_numpy(np.float32), np.nan).astype(np.float32)
                category_price = table["category"].map(self.category_price()).to_numpy(np.float32)
                columns["category_price"] = np.append(category_price, np.nan).astype(np.float32)
                columns["launch_day"] = np.append(launch.to_numpy().astype("datetime64[D]"), np.datetime64("NaT"))
                columns["launch_month"] = np.append(launch.dt.month.to_numpy(np.float32), np.nan).astype(np.float32)
            elif "open_date" in table:
                opened = pd.to_datetime(table["open_date"]).to_numpy().astype("datetime64[D]")
                columns["open_day"] = np.append(opened, np.datetime64("NaT"))
            self._cache[level] = (pd.Index(table.index), columns)
        return self._cache[level]

    def category_index(self, categories: list[str]) -> pd.Index:
        """An index of learned categories (cached): get_indexer gives the codes."""
        key = ("categories", tuple(categories))
        if key not in self._cache:
            self._cache[key] = pd.Index(categories, dtype="object")
        return self._cache[key]

    def codes(self, level: str, name: str, categories: list[str]) -> np.ndarray:
        """Float codes of attribute `name` into `categories` for every key of `level` (as in
        lookup(), with the missing last entry), NaN where missing or not a category."""
        key = ("codes", level, name, tuple(categories))
        if key not in self._cache:
            keys, table = self.lookup(level)
            values = table[name] if name in table else np.full(len(keys) + 1, None, dtype=object)
            codes = self.category_index(categories).get_indexer(values).astype(np.float32)
            codes[codes < 0] = np.nan
            self._cache[key] = codes
        return self._cache[key]

    def calendar_features(self, days: pd.Series) -> pd.DataFrame:
        """calendar_features() of `days`, looked up in a table of every day between the earliest
        and the latest asked for so far (a day's features do not depend on the other days)."""
        ordinal = pd.to_datetime(days).to_numpy().astype("datetime64[D]").astype(np.int64)
        if len(ordinal) == 0:
            return calendar_features(pd.Series(pd.to_datetime([])), self.calendar)
        lo, hi = int(ordinal.min()), int(ordinal.max())
        start, table = self._cache.get("calendar", (None, None))
        if start is None or lo < start or hi >= start + len(table):
            lo = lo if start is None else min(lo, start)
            hi = hi if start is None else max(hi, start + len(table) - 1)
            every_day = pd.Series(np.arange(lo, hi + 1).astype("datetime64[D]"))
            start, table = lo, calendar_features(every_day, self.calendar)
            self._cache["calendar"] = (start, table)
        return table.iloc[ordinal - start].reset_index(drop=True)

    def calendar_columns(self, days: np.ndarray) -> dict[str, np.ndarray]:
        """calendar_features() of `days` (datetime64[D]) as arrays."""
        ordinal = days.astype(np.int64)
        start, table = self._cache.get("calendar", (0, None))
        if len(ordinal) and (table is None or ordinal.min() < start or ordinal.max() >= start + len(table)):
            self.calendar_features(pd.Series(days[[ordinal.argmin(), ordinal.argmax()]]))  # widens the table
            start, table = self._cache["calendar"]
        if table is None:
            table = calendar_features(pd.Series(pd.to_datetime([])), self.calendar)
        key = ("calendar_arrays", start, len(table))
        if key not in self._cache:
            self._cache[key] = {name: table[name].to_numpy() for name in table.columns}
        return {name: values[ordinal - start] for name, values in self._cache[key].items()}


def _price_band(products: pd.DataFrame) -> pd.Series:
    """entry / core / premium by list-price tercile within the category (if not given)."""
    if "price_band" in products and products["price_band"].notna().all():
        return products["price_band"]
    ranks = products.groupby("category")["list_price"].rank(pct=True)
    return pd.cut(ranks, [0, 1 / 3, 2 / 3, 1.0], labels=["entry", "core", "premium"], include_lowest=True).astype(str)


SMALL_LOOKUP = 1_000  # distinct pairs up to which dict lookups beat a MultiIndex lookup

# rows to build features for: a frame, or a mapping of column name to array (what a served
# forecast builds, skipping pandas' per-call overhead); dt and origin may be datetime64 arrays
Rows = Mapping[str, Any]


def _days_of(values: Any) -> np.ndarray:
    """Dates (datetime64, Timestamps, datetime.date objects or ISO strings) as datetime64[D]."""
    array = np.asarray(values)
    if array.dtype.kind == "M":
        return array.astype("datetime64[D]")
    return pd.to_datetime(values).to_numpy().astype("datetime64[D]")


class _RowKeys:
    """The rows' SKUs and stores, factorised once: a per-SKU or per-store lookup is then done on
    the few distinct keys and spread to the rows with one take, instead of a map over every row
    (a training matrix has millions of rows and a few thousand distinct keys)."""

    def __init__(self, rows: Rows) -> None:
        # a frame's string columns factorise fastest as they are; arrays (a served request) as objects
        sku_ids, store_ids = (rows[name] if isinstance(rows[name], pd.Series) else np.asarray(rows[name], dtype=object)
                              for name in ("sku_id", "store_id"))
        if pd.isna(sku_ids).any() or pd.isna(store_ids).any():
            raise ValueError("every row needs a store_id and a sku_id")
        self.sku_codes, skus = pd.factorize(sku_ids)
        self.store_codes, stores = pd.factorize(store_ids)
        self.skus, self.stores = pd.Index(skus), pd.Index(stores)

    def per_sku(self, values: np.ndarray) -> np.ndarray:
        """`values`, one per distinct SKU (in `skus` order), spread to the rows."""
        return values[self.sku_codes]

    def per_store(self, values: np.ndarray) -> np.ndarray:
        """`values`, one per distinct store (in `stores` order), spread to the rows."""
        return values[self.store_codes]

    def series_index(self, panel: Panel) -> np.ndarray:
        """Each row's series (row of the panel), −1 where the panel does not have it."""
        pair = self.store_codes.astype(np.int64) * len(self.skus) + self.sku_codes
        pair_codes, pairs = pd.factorize(pair)
        pairs = np.asarray(pairs)
        stores, skus = self.stores[pairs // len(self.skus)], self.skus[pairs % len(self.skus)]
        if len(pairs) > SMALL_LOOKUP:  # a training matrix: one vectorised lookup
            found = panel.index.get_indexer(pd.MultiIndex.from_arrays([stores, skus]))
        else:
            positions = panel.positions
            found = np.fromiter((positions.get(p, -1) for p in zip(stores, skus)), np.int64, count=len(pairs))
        return found[pair_codes]


def feature_columns(panel: Panel, history: History, rows: Rows, attrs: Attributes, spec: FeatureSpec,
                    categories: dict[str, list[str]] | None = None) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    """The features of `rows` (a frame or a mapping of column arrays: store_id, sku_id, dt the
    target day, origin the day the forecast is made from, list_price, offer_discount_pct) as
    arrays, in the model's column order; categorical features as float codes into `categories`
    (NaN when missing or not among them). `categories` None learns them from the rows. Returns the columns and the
    categories.

    A row whose series the panel does not know (a new store × SKU) or whose origin lies outside
    the panel gets missing history features (LightGBM treats them as missing) and keeps its
    product, store, price and calendar features. Everything is array work over the rows and
    lookups on their distinct keys: the same code builds a 2M-row training matrix and the 140
    rows of one served forecast, where pandas' per-call overhead would dominate."""
    keys = _RowKeys(rows)
    series_idx = keys.series_index(panel)
    sku_idx = keys.per_sku(history.sku_index.get_indexer(keys.skus))
    store_idx = keys.per_store(history.store_index.get_indexer(keys.stores))
    target, origin = _days_of(rows["dt"]), _days_of(rows["origin"])
    n = len(target)
    horizon = (target - origin).astype(np.int64)
    if (horizon < 1).any() or (horizon > spec.horizon).any():
        raise ValueError(f"every row's target must lie 1–{spec.horizon} days after its origin")
    origin_idx = (origin - np.datetime64(panel.start, "D")).astype(np.int64)
    in_panel = (origin_idx >= 0) & (origin_idx < panel.days)

    def gather(matrix: np.ndarray, row_idx: np.ndarray, day_idx: np.ndarray, ok: np.ndarray) -> np.ndarray:
        values = np.full(n, np.nan, np.float32)
        values[ok] = matrix[row_idx[ok], day_idx[ok]]
        return values

    out: dict[str, np.ndarray] = {}
    for name in spec.history_feature_names():
        if name.startswith("same_weekday_"):
            weeks = int(name.removeprefix("same_weekday_").removesuffix("w"))
            day_idx = origin_idx + horizon - 7 * (np.ceil(horizon / 7).astype(int) + weeks - 1)
            out[name] = gather(panel.units, series_idx, day_idx, in_panel & (series_idx >= 0) & (day_idx >= 0))
        elif name in history.sku:
            out[name] = gather(history.sku[name], sku_idx, origin_idx, in_panel & (sku_idx >= 0))
        elif name in history.store:
            out[name] = gather(history.store[name], store_idx, origin_idx, in_panel & (store_idx >= 0))
        else:
            out[name] = gather(history.series[name], series_idx, origin_idx, in_panel & (series_idx >= 0))
    out["horizon_days"] = horizon.astype(np.float32)

    sku_keys, sku = attrs.lookup("sku_id")
    store_keys, store = attrs.lookup("store_id")
    distinct_sku, distinct_store = sku_keys.get_indexer(keys.skus), store_keys.get_indexer(keys.stores)
    sku_pos = keys.per_sku(distinct_sku)  # −1 (unknown) picks the missing last entry
    store_pos = keys.per_store(distinct_store)
    out["list_price"] = np.asarray(rows["list_price"], dtype=np.float32)
    out["offer_discount_pct"] = np.asarray(rows["offer_discount_pct"], dtype=np.float32)
    out["offer_price"] = out["list_price"] * (1 - out["offer_discount_pct"])
    out["price_vs_launch"] = out["list_price"] / sku["list_price"][sku_pos]
    out["offer_price_vs_category"] = out["offer_price"] / sku["category_price"][sku_pos]
    age = _days(target - sku["launch_day"][sku_pos])
    out["sku_age_days"] = age if spec.launch_age_cap_days is None else np.minimum(age, spec.launch_age_cap_days)
    out["launch_month"] = sku["launch_month"][sku_pos]
    out["store_age_days"] = (_days(target - store["open_day"][store_pos]) if "open_day" in store
                             else np.full(n, np.nan, np.float32))
    out.update(attrs.calendar_columns(target))

    learned = learn_categories(keys.stores, keys.skus, attrs) if categories is None else dict(categories)
    for name in CATEGORICAL:
        # each distinct store or SKU coded (from a per-model table of codes), then spread to the rows
        level, distinct = ("sku_id", distinct_sku) if name in SKU_ATTRIBUTES else ("store_id", distinct_store)
        if name == "store_id":  # the key itself, whether or not the stores table lists it
            codes = attrs.category_index(learned[name]).get_indexer(keys.stores).astype(np.float32)
            codes[codes < 0] = np.nan
            out[name] = keys.per_store(codes)
        else:
            codes = attrs.codes(level, name, learned[name])[distinct]
            out[name] = keys.per_sku(codes) if level == "sku_id" else keys.per_store(codes)
    return out, learned


def learn_categories(stores: pd.Index, skus: pd.Index, attrs: Attributes) -> dict[str, list[str]]:
    """The categories of each categorical feature among these stores and SKUs: the store ids
    themselves, and the values their attributes take (sorted, missing values left out)."""
    distinct = {"sku_id": attrs.lookup("sku_id")[0].get_indexer(skus),
                "store_id": attrs.lookup("store_id")[0].get_indexer(stores)}
    learned = {}
    for name in CATEGORICAL:
        level = "sku_id" if name in SKU_ATTRIBUTES else "store_id"
        table = attrs.lookup(level)[1]
        values = stores if name == "store_id" else table[name][distinct[level]] if name in table else []
        learned[name] = sorted({v for v in values if v is not None and v == v})
    return learned


@dataclass
class TrainingSet:
    """Training rows in compact form (codes, days, prices) with everything their features are
    computed from, so that any slice of the feature matrix can be built when it is needed and
    the whole matrix never has to exist at once. At medium scale the matrix is 41.7M rows × 57
    float32 features, 9.5 GB; this object is about a quarter of that, and LightGBM bins the rows
    slice by slice (models/demand/train.py)."""

    panel: Panel
    history: History
    attrs: Attributes
    spec: FeatureSpec
    categories: dict[str, list[str]]
    columns: list[str]  # the feature order
    stores: np.ndarray  # distinct store ids (object); store_codes index them
    skus: np.ndarray
    store_codes: np.ndarray  # int32 per row
    sku_codes: np.ndarray
    target: np.ndarray  # datetime64[D] per row
    origin: np.ndarray
    list_price: np.ndarray  # float32 per row
    offer_discount_pct: np.ndarray

    def __len__(self) -> int:
        return len(self.target)

    def rows(self, index: slice | np.ndarray) -> dict[str, np.ndarray]:
        """Rows `index` as the column arrays feature_columns reads."""
        return {"store_id": self.stores[self.store_codes[index]], "sku_id": self.skus[self.sku_codes[index]],
                "dt": self.target[index], "origin": self.origin[index], "list_price": self.list_price[index],
                "offer_discount_pct": self.offer_discount_pct[index]}

    def matrix(self, index: slice | np.ndarray) -> np.ndarray:
        """The float32 feature matrix of rows `index`, columns in `columns` order."""
        values, _ = feature_columns(self.panel, self.history, self.rows(index), self.attrs, self.spec, self.categories)
        return np.column_stack([values[name] for name in self.columns]).astype(np.float32, copy=False)


def training_set(panel: Panel, history: History, rows: pd.DataFrame, attrs: Attributes,
                 spec: FeatureSpec) -> TrainingSet:
    """`rows` (store_id, sku_id, dt, origin, list_price, offer_discount_pct) as a TrainingSet,
    with the categories learned from all of them."""
    keys = _RowKeys(rows)
    categories = learn_categories(keys.stores, keys.skus, attrs)
    columns = list(feature_columns(panel, history, rows.iloc[:1], attrs, spec, categories)[0])
    return TrainingSet(panel=panel, history=history, attrs=attrs, spec=spec, categories=categories, columns=columns,
                       stores=np.asarray(keys.stores, dtype=object), skus=np.asarray(keys.skus, dtype=object),
                       store_codes=keys.store_codes.astype(np.int32), sku_codes=keys.sku_codes.astype(np.int32),
                       target=_days_of(rows["dt"]), origin=_days_of(rows["origin"]),
                       list_price=rows["list_price"].to_numpy(dtype=np.float32),
                       offer_discount_pct=rows["offer_discount_pct"].to_numpy(dtype=np.float32))


def design_matrix(panel: Panel, history: History, rows: pd.DataFrame, attrs: Attributes,
                  spec: FeatureSpec, categories: dict[str, list[str]] | None = None) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """feature_columns() as a frame (indexed like `rows`) with pandas Categorical columns, for
    reading and plotting; models train and predict on the float codes of feature_columns()."""
    columns, learned = feature_columns(panel, history, rows, attrs, spec, categories)
    frame = pd.DataFrame(columns, index=rows.index)
    for name in CATEGORICAL:
        codes = np.nan_to_num(frame[name].to_numpy(), nan=-1).astype(int)
        frame[name] = pd.Categorical.from_codes(codes, categories=learned[name])
    return frame, learned


def _days(delta: np.ndarray) -> np.ndarray:
    """Whole days of a timedelta64[D] array as float32, NaN where it is NaT."""
    return np.where(np.isnat(delta), np.nan, delta.astype(np.int64)).astype(np.float32)


def with_random_origins(rows: pd.DataFrame, spec: FeatureSpec, seed: int) -> pd.DataFrame:
    """Training rows: each target day gets an origin 1–horizon days before it, drawn uniformly
    (seeded), so the model learns every horizon from one row per series and day."""
    rng = np.random.default_rng(seed)
    horizon = rng.integers(1, spec.horizon + 1, size=len(rows))
    return rows.assign(origin=pd.to_datetime(rows["dt"]) - pd.to_timedelta(horizon, unit="D"))
