"""The demand forecaster: a global LightGBM model of units per store × SKU × day, with
split-conformal P10/P90 intervals and what-if re-scoring.

`fit` trains on the history up to an origin and keeps a small snapshot (the last days of the
panel and of its history features, the product/store/calendar/price/promotion tables), so the
same object forecasts in a batch job and in a server without reading the lake. It saves to and
loads from a plain folder (booster text, JSON, Parquet, npz): no pickle.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pyarrow as pa

from lake.contract import PRICES, PROMOTIONS, complete
from lake.merge import list_prices, offer_discounts
from models.demand import blend as blending
from models.errors import BeyondVersion
from models.demand.config import DemandConfig
from models.demand.features import (
    CATEGORICAL, DATE_OF_YEAR, Attributes, FeatureSpec, History, Panel, Rows, build_panel,
    feature_columns, history_features, training_set, with_random_origins,
)
from models.demand.train import Layout, choose_layout, train_booster
from models.executor import Executor, Local
from models.saved import read_meta

FORMAT_VERSION = 2  # 2: residual quantiles are scaled by √(forecast + 1)


@dataclass
class DemandData:
    """What the demand family reads: curated demand and the dimension tables, as frames."""

    demand: pd.DataFrame  # curated demand_daily
    products: pd.DataFrame
    stores: pd.DataFrame
    calendar: pd.DataFrame
    promotions: pd.DataFrame
    prices: pd.DataFrame | None = None

    @property
    def attributes(self) -> Attributes:
        return Attributes(self.products, self.stores, self.calendar)


PROMO_DEFAULT_DISCOUNT = 0.2
MIN_BUCKET_RESIDUALS = 100
ROWS_PER_LEAF_ROW = 200  # a leaf needs at least one row in this many (and no fewer than MIN_LEAF)
MIN_LEAF = 10


def keeps_date_of_year(spec: FeatureSpec, history_days: int) -> bool:
    """Whether day of year, month and day of month are features: always, never, or (auto) when
    the history before the origin spans a year plus the horizon, so every day forecast has been
    seen a year before (a shorter history would teach the level of dates that do not recur)."""
    if spec.date_of_year != "auto":
        return spec.date_of_year == "always"
    return history_days >= 365 + spec.horizon


def sized_params(params: dict, rows: int) -> dict:
    """LightGBM parameters for `rows` training rows: the configured leaf size and leaf count are
    ceilings, lowered for small data (one series of 400 days would otherwise get four leaves of
    100 rows), so a config sized for millions of rows also fits a shop with one product."""
    configured_leaf = int(params.get("min_data_in_leaf", 20))
    leaf = int(np.clip(rows // ROWS_PER_LEAF_ROW, MIN_LEAF, max(configured_leaf, MIN_LEAF)))
    leaves = int(np.clip(rows // (4 * leaf), 4, int(params.get("num_leaves", 31))))
    return {**params, "min_data_in_leaf": min(leaf, configured_leaf), "num_leaves": leaves}
ROW_COLUMNS = ("store_id", "sku_id", "dt", "list_price", "offer_discount_pct")  # what predict() reads


@dataclass
class Forecast:
    """One forecast request's answer as arrays: element [d, i] of each matrix is SKU
    `sku_ids[i]` on `days[d]` (day-major, as the rows were built)."""

    store_id: str
    sku_ids: list[str]
    days: list[dt.date]
    list_price: np.ndarray
    offer_discount_pct: np.ndarray
    p10: np.ndarray
    p50: np.ndarray
    p90: np.ndarray

    def frame(self) -> pd.DataFrame:
        """Long format, one row per day and SKU (day-major): store_id, sku_id, dt, list_price,
        offer_discount_pct, p10, p50, p90."""
        n_days, n_skus = len(self.days), len(self.sku_ids)
        return pd.DataFrame({"store_id": self.store_id, "sku_id": np.tile(np.array(self.sku_ids, dtype=object), n_days),
                             "dt": np.repeat(np.array(self.days, dtype=object), n_skus),
                             **{name: getattr(self, name).ravel() for name in
                                ("list_price", "offer_discount_pct", "p10", "p50", "p90")}})


class HorizonBeyond(BeyondVersion, ValueError):
    """Days asked past the version's forecast horizon."""


class DemandForecaster:
    """fit(data, origin) → forecast(store_id, sku_ids, horizon_days, what_if)."""

    def __init__(self, config: DemandConfig) -> None:
        self.config = config

    # --- training -------------------------------------------------------------------------
    def fit(self, data: DemandData, origin: dt.date | None = None, layout: Layout | None = None,
            executor: Executor | None = None) -> "DemandForecaster":
        """Train on the days up to `origin` (default: the last day of the data), in this process
        unless an executor says otherwise (the jobs pass OnRay())."""
        executor = executor or Local()
        spec, training = self.config.features, self.config.training
        demand = data.demand
        origin = origin or max(demand["dt"])
        first_train_day = origin - dt.timedelta(days=training.history_days)
        first_panel_day = origin - dt.timedelta(days=lookback_days(self.config))
        history_rows = demand[(demand["dt"] <= origin) & (demand["dt"] > first_panel_day)]
        if history_rows.empty:
            raise ValueError(f"no demand rows up to {origin}; merge the lake first")
        panel = build_panel(history_rows)
        history = history_features(panel, spec)
        train_rows = with_random_origins(history_rows[history_rows["dt"] > first_train_day], spec, training.seed)
        train_rows = train_rows[train_rows["origin"] >= pd.Timestamp(panel.start)]
        rows = training_set(panel, history, train_rows, data.attributes, spec)
        if not keeps_date_of_year(spec, (origin - min(history_rows["dt"])).days + 1):
            rows.columns = [c for c in rows.columns if c not in DATE_OF_YEAR]
        y = train_rows["units_sold"].to_numpy(dtype=np.float64)
        del train_rows, history_rows  # at medium scale, gigabytes that training does not need
        categorical = list(CATEGORICAL)
        self.layout_ = layout or choose_layout(training, len(rows), executor.node_cpus())
        self.params_ = sized_params(dict(training.params), len(rows))
        self.booster_ = train_booster(rows, y, self.params_, training.num_boost_round, self.layout_, categorical,
                                      executor)
        self.categories_ = rows.categories
        self.features_order_ = rows.columns
        self.categorical_ = categorical
        self.origin_ = origin
        self.training_rows_ = len(rows)
        self.panel_, self.history_ = _tail(panel, history, _snapshot_days(spec))
        self.tables_ = {"products": data.products, "stores": data.stores, "calendar": data.calendar,
                        "promotions": data.promotions, "prices": data.prices}
        self.residual_quantiles_: pd.DataFrame | None = None
        self.blend_: dict[int, list[float]] = {}
        self._lookup_tables = self._attributes_cache = self._plan = self._levels = None
        return self

    def as_of(self, demand: pd.DataFrame, day: dt.date) -> "DemandForecaster":
        """A copy of this fitted model that forecasts the days after `day` from the history in
        `demand` (curated demand_daily rows; days after `day` are ignored): the booster, the
        tables, the blend and the intervals stay, the snapshot of recent history is rebuilt.
        Forecasting from a day before the model's own origin is in-sample (the model saw the
        days that follow); a backtest trains with the same as-of day. Raises ValueError when
        `demand` has no row in the history the features look back on."""
        spec = self.config.features
        first = day - dt.timedelta(days=lookback_days(self.config))  # the panel fit() builds
        days = pd.to_datetime(demand["dt"]).dt.date
        rows = demand[(days <= day) & (days > first)]
        if not (days[days <= day] > day - dt.timedelta(days=spec.history_days)).any():
            raise ValueError(f"no demand rows in the {spec.history_days} days up to {day}: "
                             f"choose a day the lake covers")
        panel = build_panel(rows)
        end = panel.start + dt.timedelta(days=panel.days - 1)
        if end < day:  # no sale anywhere on the last days: those days are unknown, not zero
            gap = np.full((panel.units.shape[0], (day - end).days), np.nan, dtype=np.float32)
            panel = Panel(panel.series, panel.start, np.concatenate([panel.units, gap], axis=1))
        other = copy.copy(self)
        other.origin_ = day
        other.panel_, other.history_ = _tail(panel, history_features(panel, spec), _snapshot_days(spec))
        other._plan = other._levels = None  # both follow the origin and the panel
        return other

    # --- prediction -----------------------------------------------------------------------
    def _attributes(self) -> Attributes:
        """The attributes, built once per fitted (or loaded) model with their lookup caches."""
        if getattr(self, "_attributes_cache", None) is None:
            t = self.tables_
            self._attributes_cache = Attributes(t["products"], t["stores"], t["calendar"])
        return self._attributes_cache

    def predict(self, rows: Rows) -> np.ndarray:
        """Point forecasts (expected units) for rows (a frame or a mapping of column arrays) with
        store_id, sku_id, dt (1–horizon days after the origin), list_price and offer_discount_pct."""
        n = len(rows["sku_id"])
        asked = {name: rows[name] for name in ROW_COLUMNS}
        asked["origin"] = np.full(n, np.datetime64(self.origin_, "D"))
        columns, _ = feature_columns(self.panel_, self.history_, asked, self._attributes(), self.config.features,
                                     self.categories_)
        matrix = np.column_stack([columns[name] for name in self.features_order_]) if n else \
            np.empty((0, len(self.features_order_)), np.float32)
        predicted = np.clip(self.booster_.predict(matrix), 0, None)
        if not getattr(self, "blend_", None) or not n:
            return predicted
        simple = self.simple_forecasts(rows["store_id"], rows["sku_id"])
        known = ~np.isnan(simple[:, 0])  # a series the model has not seen keeps the model's forecast
        candidates = np.column_stack([predicted[known], simple[known]])
        predicted[known] = blending.apply(candidates, blending.segments(simple[known, 0]), self.blend_)
        return predicted

    def simple_forecasts(self, store_ids, sku_ids) -> np.ndarray:
        """Per row, the simple forecasts of its series as of the origin, in blend.CANDIDATES order
        after the model: the 28-day moving average and the TSB level (the moving average where the
        snapshot has no TSB level). NaN for a series the model has not seen."""
        if getattr(self, "_levels", None) is None:
            average = blending.moving_average(self.panel_.units)
            tsb = self.history_.series.get("tsb_level")
            tsb = average if tsb is None else np.where(np.isnan(tsb[:, -1]), average, tsb[:, -1])
            self._levels = np.column_stack([average, tsb])
        asked = pd.MultiIndex.from_arrays([np.asarray(store_ids, dtype=object), np.asarray(sku_ids, dtype=object)])
        position = self.panel_.index.get_indexer(asked)
        return np.where((position >= 0)[:, None], self._levels[position], np.nan)

    def moving_averages(self, store_ids, sku_ids) -> np.ndarray:
        """The 28-day moving average (as of the origin) of each row's series; NaN for a series
        the model has not seen."""
        return self.simple_forecasts(store_ids, sku_ids)[:, 0]

    def blend(self, weights: dict[int, list[float]]) -> "DemandForecaster":
        """Use `weights` (per level segment, the mix of the model, the 28-day moving average and
        the TSB level chosen on backtest origins: models/demand/blend.py) from now on."""
        self.blend_ = dict(weights)
        return self

    def calibrate(self, predicted: np.ndarray, actual: np.ndarray) -> "DemandForecaster":
        """Learn the P10/P90 residual quantiles, per decile of the point forecast, from the
        forecasts of an earlier origin and what then sold (split conformal). Residuals are scaled
        by √(forecast + 1) — counts spread with their level — so a series selling 200 a day gets
        a band to match, not the band of the decile's typical series."""
        iv = self.config.intervals
        # a bucket's quantiles need residuals: at least MIN_BUCKET_RESIDUALS each (a single series
        # with a few backtest origins gets one bucket, not ten of a dozen residuals)
        buckets = int(np.clip(len(predicted) // MIN_BUCKET_RESIDUALS, 1, iv.buckets))
        edges = np.unique(np.quantile(predicted, np.linspace(0, 1, buckets + 1)[1:-1])) if len(predicted) else np.array([])
        bucket = np.searchsorted(edges, predicted, side="right")
        residual = (actual - predicted) / np.sqrt(predicted + 1.0)
        table = pd.DataFrame({"bucket": bucket, "residual": residual}).groupby("bucket")["residual"]
        self.residual_quantiles_ = pd.DataFrame({"lower": table.quantile(iv.lower), "upper": table.quantile(iv.upper)})
        self.bucket_edges_ = edges
        self._bands = None
        return self

    def intervals(self, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """P10 and P90 around point forecasts (never below zero). Raises if not calibrated."""
        if self.residual_quantiles_ is None:
            raise RuntimeError("the forecaster has no interval calibration; call calibrate() after fit()")
        if getattr(self, "_bands", None) is None:  # per bucket, empty buckets from their neighbours
            q = self.residual_quantiles_.reindex(range(len(self.bucket_edges_) + 1)).ffill().bfill()
            self._bands = (q["lower"].to_numpy(), q["upper"].to_numpy())
        bucket = np.searchsorted(self.bucket_edges_, predicted, side="right")
        scale = np.sqrt(predicted + 1.0)
        lower = np.clip(predicted + self._bands[0][bucket] * scale, 0, None)
        upper = np.clip(predicted + self._bands[1][bucket] * scale, 0, None)
        return np.minimum(lower, predicted), np.maximum(upper, predicted)

    def _lookups(self) -> tuple[pa.Table, pa.Table | None, pa.Table, pa.Table]:
        """Products, prices, stores and promotions as Arrow tables with the contract's types,
        built once per fitted (or loaded) model: every forecast request reuses them."""
        if getattr(self, "_lookup_tables", None) is None:
            t = self.tables_

            def arrow(frame: pd.DataFrame, fields: list[tuple[str, pa.DataType]]) -> pa.Table:
                return pa.Table.from_pandas(frame.reindex(columns=[n for n, _ in fields]),
                                            schema=pa.schema(fields), preserve_index=False)

            text = pa.string()
            self._lookup_tables = (
                arrow(t["products"], [("sku_id", text), ("list_price", pa.float64()), ("category", text)]),
                None if t["prices"] is None else complete(pa.Table.from_pandas(t["prices"], preserve_index=False), PRICES),
                arrow(t["stores"], [("store_id", text), ("channel", text), ("platform", text)]),
                complete(pa.Table.from_pandas(t["promotions"], preserve_index=False), PROMOTIONS),
            )
        return self._lookup_tables

    def _plan_table(self) -> dict:
        """The planned list price of every SKU and its deepest planned discount per kind of
        store (channel × platform: what promotions are scoped by) for each day of the horizon,
        computed once per model so a forecast request only gathers from arrays."""
        if getattr(self, "_plan", None) is None:
            products, _, stores, _ = self._lookups()
            days = [self.origin_ + dt.timedelta(days=h) for h in range(1, self.config.features.horizon + 1)]
            skus = products["sku_id"].to_pylist()
            store_frame = stores.to_pandas()
            kinds = store_frame[["channel", "platform"]].astype("object").where(store_frame[["channel", "platform"]].notna(), None)
            kind_key = [f"{c}|{p}" for c, p in zip(kinds["channel"], kinds["platform"])]
            first_store = dict(zip(reversed(kind_key), reversed(store_frame["store_id"].tolist())))
            kind_names = sorted(first_store)
            grid = pd.DataFrame({"store_id": np.repeat([first_store[k] for k in kind_names], len(skus)),
                                 "sku_id": np.tile(skus, len(kind_names))})
            slow = self._planned_rows_each_day(grid, days)
            self._plan = {
                "days": {d: i for i, d in enumerate(days)},
                "sku": {s: i for i, s in enumerate(skus)},
                "kind_of_store": dict(zip(store_frame["store_id"], (kind_names.index(k) for k in kind_key))),
                "list_price": slow["list_price"].to_numpy(float).reshape(len(days), len(kind_names), len(skus))[:, 0, :],
                "discount": slow["offer_discount_pct"].to_numpy(float).reshape(len(days), len(kind_names), len(skus)),
            }
        return self._plan

    def planned_rows(self, pairs: pd.DataFrame, days: list[dt.date]) -> pd.DataFrame:
        """Rows for store × SKU `pairs` on future `days`, priced with the list prices and the
        promotions planned for those days (from the per-model plan table for days of the
        horizon, computed on the spot for any other day)."""
        planned = self._planned_arrays(pairs["store_id"].to_numpy(object), pairs["sku_id"].to_numpy(object), days)
        if planned is None:
            return self._planned_rows_each_day(pairs, days)
        return pd.DataFrame({**planned, "dt": np.repeat(np.array(days, dtype=object), len(pairs))})

    def _planned_arrays(self, store_ids: np.ndarray, sku_ids: np.ndarray, days: list[dt.date]) -> dict | None:
        """planned_rows() as column arrays (dt as datetime64), day-major: row d·len(pairs) + i
        is pair i on days[d]. None when a day lies outside the horizon or a store or SKU is not
        in the plan (planned_rows then computes the rows on the spot)."""
        plan = self._plan_table()
        sku_of, kind_of = plan["sku"], plan["kind_of_store"]
        sku_pos = [sku_of.get(s, -1) for s in sku_ids]
        kind_pos = [kind_of.get(s, -1) for s in store_ids]
        if not all(d in plan["days"] for d in days) or -1 in sku_pos or -1 in kind_pos:
            return None
        day_pos = np.repeat([plan["days"][d] for d in days], len(sku_ids))
        sku_pos, kind_pos = np.tile(np.asarray(sku_pos, np.int64), len(days)), np.tile(np.asarray(kind_pos, np.int64), len(days))
        return {"store_id": np.tile(store_ids, len(days)), "sku_id": np.tile(sku_ids, len(days)),
                "dt": np.repeat(np.array(days, dtype="datetime64[D]"), len(sku_ids)),
                "list_price": plan["list_price"][day_pos, sku_pos],
                "offer_discount_pct": plan["discount"][day_pos, kind_pos, sku_pos]}

    def planned_prices(self, store_ids: np.ndarray, sku_ids: np.ndarray,
                       days: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """The planned list price and discount of each row (store_ids[i], sku_ids[i], days[i]:
        datetime64[D]), gathered from the per-model plan table; None when a row's day lies outside
        the horizon or its store or SKU is not in the plan."""
        plan = self._plan_table()
        day_pos = (np.asarray(days, "datetime64[D]") - np.datetime64(self.origin_, "D")).astype(np.int64) - 1
        if len(day_pos) and not ((day_pos >= 0) & (day_pos < len(plan["days"]))).all():
            return None
        positions = []
        for values, index in ((sku_ids, plan["sku"]), (store_ids, plan["kind_of_store"])):
            codes, uniques = pd.factorize(np.asarray(values, dtype=object))
            known = np.array([index.get(u, -1) for u in uniques], dtype=np.int64)
            if (known == -1).any():
                return None
            positions.append(known[codes] if len(codes) else codes.astype(np.int64))
        sku_pos, kind_pos = positions
        return plan["list_price"][day_pos, sku_pos], plan["discount"][day_pos, kind_pos, sku_pos]

    def _planned_rows_each_day(self, pairs: pd.DataFrame, days: list[dt.date]) -> pd.DataFrame:
        # the contract's Arrow types throughout: pandas 3 strings would become large_string,
        # all-empty columns null, and Arrow joins refuse both
        products, prices, stores, promotions = self._lookups()
        pair_schema = pa.schema([("store_id", pa.string()), ("sku_id", pa.string())])
        frames = []
        for day in days:
            rows = pairs[["store_id", "sku_id"]].assign(dt=day)
            price = list_prices(products, prices, day).to_pandas().set_index("sku_id")["list_price"]
            rows["list_price"] = rows["sku_id"].map(price).to_numpy()
            rows["offer_discount_pct"] = offer_discounts(
                promotions, stores, products, day,
                pa.Table.from_pandas(rows[["store_id", "sku_id"]], schema=pair_schema, preserve_index=False))
            frames.append(rows)
        return pd.concat(frames, ignore_index=True)

    def forecast(self, store_id: str, sku_ids: list[str], horizon_days: int | None = None,
                 what_if: dict | None = None) -> pd.DataFrame:
        """P10/P50/P90 per SKU and day for the next `horizon_days` after the origin, optionally
        re-scored with a changed price, discount or promotion. Raises KeyError for an unknown
        store or SKU and ValueError for a horizon outside 1..horizon."""
        answer = self.forecast_many([(store_id, sku_ids, horizon_days, what_if)])[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def forecast_many(self, asks: list[tuple[str, list[str], int | None, dict | None]]) -> list[pd.DataFrame | Exception]:
        """forecast() of several (store_id, sku_ids, horizon_days, what_if) at once, each answer
        that request's frame or the KeyError / ValueError it raised."""
        return [a if isinstance(a, Exception) else a.frame() for a in self.forecast_arrays(asks)]

    def forecast_arrays(self, asks: list[tuple[str, list[str], int | None, dict | None]]) -> list[Forecast | Exception]:
        """The answers of forecast_many() as arrays, computed with one feature build and one
        booster call for all the requests: what makes a batch of served requests cheap, and a
        single one cheap too (no frames). A bad request does not affect the others."""
        answers: list[Forecast | Exception | None] = [None] * len(asks)
        prepared: list[tuple[int, str, list[str], list[dt.date], dict]] = []
        for i, (store_id, sku_ids, horizon_days, what_if) in enumerate(asks):
            try:
                prepared.append((i, store_id, list(sku_ids), *self._request_rows(store_id, sku_ids, horizon_days, what_if)))
            except (KeyError, ValueError) as exc:
                answers[i] = exc
        if prepared:
            rows = prepared[0][4] if len(prepared) == 1 else \
                {name: np.concatenate([p[4][name] for p in prepared]) for name in ROW_COLUMNS}
            p50 = self.predict(rows)
            p10, p90 = self.intervals(p50)
            start = 0
            for i, store_id, sku_ids, days, _ in prepared:
                end = start + len(days) * len(sku_ids)
                part = [values[start:end].reshape(len(days), len(sku_ids))  # rows are day-major
                        for values in (rows["list_price"], rows["offer_discount_pct"], p10, p50, p90)]
                answers[i] = Forecast(store_id, sku_ids, days, *part)
                start = end
        return answers

    def _request_rows(self, store_id: str, sku_ids: list[str], horizon_days: int | None,
                      what_if: dict | None) -> tuple[list[dt.date], dict]:
        """The days and the planned rows (column arrays, what-if applied) of one forecast
        request; raises KeyError / ValueError."""
        horizon = self.config.features.horizon if horizon_days is None else horizon_days
        if not 1 <= horizon <= self.config.features.horizon:
            raise HorizonBeyond(f"horizon_days must be 1–{self.config.features.horizon}, got {horizon}: this "
                                f"version forecasts {self.config.features.horizon} days")
        stores, products = self._attributes().lookup("store_id")[0], self._attributes().lookup("sku_id")[0]
        if store_id not in stores:
            raise KeyError(f"unknown store_id {store_id!r}")
        unknown = [s for s in sku_ids if s not in products]
        if unknown:
            raise KeyError(f"unknown sku_id(s): {', '.join(map(repr, unknown[:5]))}")
        days = [self.origin_ + dt.timedelta(days=h) for h in range(1, horizon + 1)]
        store_ids, skus = np.full(len(sku_ids), store_id, dtype=object), np.array(sku_ids, dtype=object)
        rows = self._planned_arrays(store_ids, skus, days)
        if rows is None:  # a SKU the plan does not have: priced on the spot
            frame = self._planned_rows_each_day(pd.DataFrame({"store_id": store_ids, "sku_id": skus}), days)
            rows = {name: frame[name].to_numpy() for name in ROW_COLUMNS}
        return days, apply_what_if(rows, what_if or {})

    # --- persistence ----------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write the fitted forecaster to a folder (booster text, JSON, Parquet, npz)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "booster.txt").write_text(self.booster_.model_to_string())
        meta = {"format_version": FORMAT_VERSION, "config": self.config.model_dump(mode="json"),
                "categories": self.categories_, "features_order": self.features_order_,
                "categorical": self.categorical_, "origin": self.origin_.isoformat(),
                "training_rows": self.training_rows_, "layout": self.layout_.describe(),
                "panel_start": self.panel_.start.isoformat(),
                "bucket_edges": getattr(self, "bucket_edges_", np.array([])).tolist(),
                "blend": {str(k): v for k, v in getattr(self, "blend_", {}).items()},
                "residual_quantiles": None if self.residual_quantiles_ is None
                else self.residual_quantiles_.reset_index().to_dict(orient="list")}
        (folder / "forecaster.json").write_text(json.dumps(meta, indent=1))
        self.panel_.series.to_parquet(folder / "panel_series.parquet")
        h = self.history_
        np.savez_compressed(folder / "history.npz", units=self.panel_.units,
                            **{f"series__{k}": v for k, v in h.series.items()},
                            **{f"sku__{k}": v for k, v in h.sku.items()},
                            **{f"store__{k}": v for k, v in h.store.items()})
        pd.DataFrame({"sku_id": h.sku_index}).to_parquet(folder / "sku_index.parquet")
        pd.DataFrame({"store_id": h.store_index}).to_parquet(folder / "store_index.parquet")
        for name, frame in self.tables_.items():
            if frame is not None:
                frame.to_parquet(folder / f"table_{name}.parquet")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "DemandForecaster":
        """Read a forecaster written by `save`. Raises ValueError for an unknown format."""
        folder = Path(folder)
        meta = read_meta(folder, "forecaster.json", "demand forecaster", FORMAT_VERSION)
        self = cls(DemandConfig.model_validate(meta["config"]))
        self.booster_ = lgb.Booster(model_str=(folder / "booster.txt").read_text())
        self.categories_, self.features_order_ = meta["categories"], meta["features_order"]
        self.categorical_, self.origin_ = meta["categorical"], dt.date.fromisoformat(meta["origin"])
        self.training_rows_ = meta["training_rows"]
        self.layout_ = Layout(1, 1, False)
        arrays = np.load(folder / "history.npz")
        series = pd.read_parquet(folder / "panel_series.parquet")
        self.panel_ = Panel(series, dt.date.fromisoformat(meta["panel_start"]), arrays["units"])
        pick = lambda prefix: {k.split("__", 1)[1]: arrays[k] for k in arrays.files if k.startswith(prefix + "__")}
        self.history_ = History(series=pick("series"), sku=pick("sku"), store=pick("store"),
                                sku_index=pd.Index(pd.read_parquet(folder / "sku_index.parquet")["sku_id"]),
                                store_index=pd.Index(pd.read_parquet(folder / "store_index.parquet")["store_id"]))
        self.tables_ = {name: (pd.read_parquet(folder / f"table_{name}.parquet")
                               if (folder / f"table_{name}.parquet").exists() else None)
                        for name in ("products", "stores", "calendar", "promotions", "prices")}
        for name in ("products", "stores", "calendar", "promotions", "prices"):
            frame = self.tables_[name]
            if frame is not None:
                for col in frame.columns:  # dates come back from Parquet as dates; keep them so
                    if str(frame[col].dtype).startswith("datetime64") and col != "linked_at":
                        frame[col] = frame[col].dt.date
        q = meta["residual_quantiles"]
        # none before the blend existed; one number (the model's share against the moving average) before TSB
        self.blend_ = {int(k): blending.as_mix(v) for k, v in meta.get("blend", {}).items()}
        self.bucket_edges_ = np.array(meta["bucket_edges"])
        self.residual_quantiles_ = None if q is None else pd.DataFrame(q).set_index("bucket")
        return self


def apply_what_if(rows: Rows, what_if: dict) -> Rows:
    """Rows (a frame or a mapping of column arrays) with the what-if overrides applied, as a
    copy: `price` (CNY per unit, replaces the list price), `discount` (fraction off), `promo`
    (True: at least the typical 20 % promotion; False: none). Raises ValueError for impossible
    values."""
    rows = rows.copy()
    n = len(rows["sku_id"])
    if what_if.get("price") is not None:
        if not what_if["price"] > 0:
            raise ValueError("what_if.price must be a positive price in CNY")
        rows["list_price"] = np.full(n, float(what_if["price"]))
    if what_if.get("discount") is not None:
        if not 0 <= what_if["discount"] <= 0.9:
            raise ValueError("what_if.discount must be a fraction in [0, 0.9]")
        rows["offer_discount_pct"] = np.full(n, float(what_if["discount"]))
    if what_if.get("promo") is True:
        rows["offer_discount_pct"] = np.maximum(np.asarray(rows["offer_discount_pct"], dtype=float), PROMO_DEFAULT_DISCOUNT)
    elif what_if.get("promo") is False:
        rows["offer_discount_pct"] = np.zeros(n)
    return rows


def lookback_days(config: DemandConfig) -> int:
    """How many days before its origin a fit reads: the training days and the history their
    features look back on."""
    return config.training.history_days + config.features.history_days


def _snapshot_days(spec) -> int:
    """How many of the last panel days a fitted model keeps: what its history features read."""
    return 7 * (spec.same_weekday_weeks + 1) + 1


def _tail(panel: Panel, history: History, days: int) -> tuple[Panel, History]:
    cut = max(0, panel.days - days)
    return (Panel(panel.series, panel.start + dt.timedelta(days=cut), panel.units[:, cut:]),
            History(series={k: v[:, cut:] for k, v in history.series.items()},
                    sku={k: v[:, cut:] for k, v in history.sku.items()},
                    store={k: v[:, cut:] for k, v in history.store.items()},
                    sku_index=history.sku_index, store_index=history.store_index))
