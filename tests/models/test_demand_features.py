"""Demand features: nothing after the origin leaks in, days (not rows) are counted, calendar
distances, one code path for training rows and forecast rows."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from models.demand.features import (
    Attributes, FeatureSpec, Panel, build_panel, calendar_features, design_matrix, history_features,
    with_random_origins,
)

START = dt.date(2025, 1, 1)


def _demand(values: dict[tuple[str, str], list[float | None]]) -> pd.DataFrame:
    rows = []
    for (store, sku), ys in values.items():
        for i, y in enumerate(ys):
            if y is not None:  # None: no row (closed, not ranged)
                rows.append({"store_id": store, "sku_id": sku, "dt": START + dt.timedelta(days=i), "units_sold": y})
    return pd.DataFrame(rows)


def _attrs(skus=("A", "B")) -> Attributes:
    products = pd.DataFrame({"sku_id": list(skus), "category": "tops", "list_price": 100.0,
                             "launch_date": START})
    stores = pd.DataFrame({"store_id": ["S", "T"], "channel": "offline", "city": "X"})
    calendar = pd.DataFrame({"date": [dt.date(2025, 2, 14)], "event": ["valentines"], "phase": ["peak"]})
    return Attributes(products, stores, calendar)


def test_bad_windows_are_refused():
    with pytest.raises(ValueError, match="at least 1 day"):
        FeatureSpec(windows=(0, 7))


def test_trailing_means_count_days_and_ignore_closed_days():
    ys = [float(i) for i in range(10)]
    ys[4] = None  # a closed day: no row
    panel = build_panel(_demand({("S", "A"): ys}))
    feats = history_features(panel, FeatureSpec(windows=(3,)))
    assert feats.series["mean_3d"][0, 5] == pytest.approx((3 + 5) / 2)  # day 4 is missing, not zero
    assert feats.series["mean_3d"][0, 9] == pytest.approx(8.0)
    assert feats.series["days_since_first_sale"][0, 9] == 8  # first sale on day 1


def test_nothing_after_the_origin_reaches_a_row():
    rng = np.random.default_rng(0)
    demand = _demand({("S", "A"): list(rng.poisson(3, 60).astype(float)), ("T", "A"): list(rng.poisson(1, 60).astype(float))})
    spec = FeatureSpec(horizon=14, windows=(7, 28), same_weekday_weeks=2)
    rows = demand[demand["dt"] > START + dt.timedelta(days=40)].assign(origin=pd.Timestamp(START + dt.timedelta(days=40)),
                                                                      list_price=100.0, offer_discount_pct=0.0)
    rows = rows[pd.to_datetime(rows["dt"]) <= pd.Timestamp(START + dt.timedelta(days=54))]
    panel = build_panel(demand)
    before, _ = design_matrix(panel, history_features(panel, spec), rows, _attrs(), spec)
    changed = panel.units.copy()
    changed[:, 41:] = 999  # everything after the origin
    altered = Panel(panel.series, panel.start, changed)
    after, _ = design_matrix(altered, history_features(altered, spec), rows, _attrs(), spec)
    pd.testing.assert_frame_equal(before, after)
    assert before["horizon_days"].min() == 1 and before["horizon_days"].max() == 14


def test_same_weekday_lags_fall_on_the_target_weekday_before_the_origin():
    ys = [float(i) for i in range(40)]
    panel = build_panel(_demand({("S", "A"): ys}))
    spec = FeatureSpec(horizon=10, windows=(7,), same_weekday_weeks=2)
    origin = START + dt.timedelta(days=30)
    rows = pd.DataFrame({"store_id": "S", "sku_id": "A", "dt": [origin + dt.timedelta(days=h) for h in (1, 7, 8)],
                         "origin": origin, "list_price": 100.0, "offer_discount_pct": 0.0})
    frame, _ = design_matrix(panel, history_features(panel, spec), rows, _attrs(), spec)
    # target day 31 -> day 24 and 17; day 37 -> 30 and 23; day 38 -> 24 and 17 (day 31 is after the origin)
    assert frame["same_weekday_1w"].tolist() == [24.0, 30.0, 24.0]
    assert frame["same_weekday_2w"].tolist() == [17.0, 23.0, 17.0]
    assert frame["last_day"].tolist() == [30.0, 30.0, 30.0]


def test_a_new_sku_brings_its_first_days_of_sales():
    old = [2.0] * 40
    new = [None] * 30 + [6.0] * 10  # launched 10 days before the origin, sold in store S only
    panel = build_panel(_demand({("S", "A"): old, ("S", "B"): new, ("T", "A"): old}))
    spec = FeatureSpec(horizon=7)
    rows = pd.DataFrame({"store_id": ["T"], "sku_id": ["B"], "dt": [START + dt.timedelta(days=42)],
                         "origin": START + dt.timedelta(days=39), "list_price": 100.0, "offer_discount_pct": 0.0})
    frame, _ = design_matrix(panel, history_features(panel, spec), rows, _attrs(), spec)
    # store T never sold B: no series history, but the SKU's rate across stores is known
    assert np.isnan(frame["mean_7d"].iloc[0])
    assert frame["sku_mean_since_launch"].iloc[0] == pytest.approx(6.0)


def test_targets_outside_the_horizon_are_refused():
    panel = build_panel(_demand({("S", "A"): [1.0] * 10}))
    spec = FeatureSpec(horizon=3)
    rows = pd.DataFrame({"store_id": ["S"], "sku_id": ["A"], "dt": [START + dt.timedelta(days=9)],
                         "origin": START, "list_price": 1.0, "offer_discount_pct": 0.0})
    with pytest.raises(ValueError, match="1–3 days after its origin"):
        design_matrix(panel, history_features(panel, spec), rows, _attrs(), spec)


def test_days_to_and_since_events():
    cal = pd.DataFrame({"date": [dt.date(2025, 6, 18), dt.date(2025, 11, 11)], "event": ["618", "double11"],
                        "phase": ["peak", "peak"]})
    days = pd.Series([dt.date(2025, 6, 10), dt.date(2025, 6, 18), dt.date(2025, 6, 20)])
    feats = calendar_features(days, cal)
    assert feats["days_to_618"].tolist() == [8, 0, 45]
    assert feats["days_since_618"].tolist() == [45, 0, 2]
    assert feats["phase_peak"].tolist() == [0, 1, 0]
    assert feats["day_of_week"].tolist() == [1, 2, 4]


def test_event_features_follow_the_lake_s_calendar():
    """Another country's calendar brings its own events; the generator's are not assumed."""
    cal = pd.DataFrame({"date": [dt.date(2025, 11, 28), dt.date(2025, 12, 26), dt.date(2026, 11, 27)],
                        "event": ["Black Friday", "boxing-day", "Black Friday"], "phase": ["peak", "holiday", "peak"]})
    days = pd.Series([dt.date(2025, 11, 20), dt.date(2025, 12, 1), dt.date(2026, 11, 26)])
    feats = calendar_features(days, cal)
    events = sorted(c.removeprefix("days_to_") for c in feats if c.startswith("days_to_"))
    assert events == ["black_friday", "boxing_day"]
    assert feats["days_to_black_friday"].tolist() == [8, 45, 1]  # the next year's date counts
    assert feats["days_since_black_friday"].tolist() == [45, 3, 45]
    assert feats["phase_holiday"].tolist() == [0, 0, 0]
    bare = calendar_features(days, cal.iloc[:0])
    assert not [c for c in bare if c.startswith("days_")] and "day_of_week" in bare


def test_training_and_forecast_rows_share_columns_and_codes(tiny_lake):
    demand = tiny_lake.read_all("curated", "demand_daily").to_pandas()
    attrs = Attributes(tiny_lake.read("raw", "products").to_pandas(), tiny_lake.read("raw", "stores").to_pandas(),
                       tiny_lake.read("raw", "calendar").to_pandas())
    spec = FeatureSpec()
    origin = demand["dt"].max() - dt.timedelta(days=28)
    panel = build_panel(demand[demand["dt"] <= origin])
    feats = history_features(panel, spec)
    train_rows = with_random_origins(demand[demand["dt"] <= origin].sample(500, random_state=0), spec, seed=1)
    train, categories = design_matrix(panel, feats, train_rows, attrs, spec)
    future = demand[demand["dt"] > origin].head(300).assign(origin=pd.Timestamp(origin))
    scored, same = design_matrix(panel, feats, future, attrs, spec, categories)
    assert list(scored.columns) == list(train.columns) and same == categories
    assert scored["mean_28d"].notna().mean() > 0.8
    assert str(scored["category"].dtype) == "category"


def test_a_training_set_binned_slice_by_slice_trains_the_model_of_the_whole_matrix(tiny_lake, monkeypatch):
    """The single training worker never holds the float matrix: LightGBM bins a TrainingSet
    slice by slice (models/demand/train.py). Its slices must be the rows of the whole matrix,
    and the model the one trained on the matrix at once."""
    import lightgbm as lgb

    from models.demand import train
    from models.demand.features import CATEGORICAL, feature_columns, training_set

    demand = tiny_lake.read_all("curated", "demand_daily").to_pandas()
    attrs = Attributes(tiny_lake.read("raw", "products").to_pandas(), tiny_lake.read("raw", "stores").to_pandas(),
                       tiny_lake.read("raw", "calendar").to_pandas())
    spec = FeatureSpec()
    origin = demand["dt"].max() - dt.timedelta(days=28)
    history_rows = demand[demand["dt"] <= origin]
    panel = build_panel(history_rows)
    feats = history_features(panel, spec)
    rows = with_random_origins(history_rows.sample(3000, random_state=0).sort_values("dt"), spec, seed=1)
    rows = rows[rows["origin"] >= pd.Timestamp(panel.start)].assign(offer_discount_pct=0.1)
    rows["list_price"] = 99.0
    ts = training_set(panel, feats, rows, attrs, spec)
    columns, categories = feature_columns(panel, feats, rows, attrs, spec)
    whole = np.column_stack([columns[name] for name in ts.columns]).astype(np.float32)
    assert ts.categories == categories and ts.columns == list(columns)
    np.testing.assert_array_equal(ts.matrix(slice(100, 900)), whole[100:900])
    np.testing.assert_array_equal(ts.matrix(np.array([5, 17, 2000])), whole[[5, 17, 2000]])

    y = rows["units_sold"].to_numpy(float)
    params = {"objective": "tweedie", "num_leaves": 15, "min_data_in_leaf": 20, "verbose": -1, "num_threads": 1,
              "seed": 1}
    monkeypatch.setattr(train, "BIN_SAMPLE_ROWS", 1000)  # the bins come from a sample here too
    monkeypatch.setattr(train._FeatureBatches, "batch_size", 700)  # several slices, the last one short
    bins = train.bin_sample(ts, 1)
    assert bins.shape == (1000, len(ts.columns))
    sliced = lgb.train(params, train.dataset(ts, y, params, list(CATEGORICAL), bins, ts.columns), num_boost_round=10)
    at_once = lgb.train(params, train.dataset(pd.DataFrame(whole, columns=ts.columns), y, params, list(CATEGORICAL),
                                               bins, ts.columns), num_boost_round=10)
    assert sliced.num_trees() == 10
    np.testing.assert_array_equal(sliced.predict(whole), at_once.predict(whole))
    assert sliced.predict(whole).std() > 0  # a model that learned something, not a constant


def test_intermittency_features_follow_tsb_and_skip_closed_days():
    """TSB: probability and size of a sale, each smoothed by 0.1 over the days with a row; a
    closed day (no row) changes nothing; days since the last sale count calendar days."""
    from models.demand.features import intermittency_features

    units = np.array([[np.nan, 2.0, 0.0, np.nan, 0.0, 4.0]], np.float32)
    f = intermittency_features(units)
    # day 1: first row, a sale of 2 → p = 1, size = 2; day 2: p = 0.9; day 4: p = 0.81; day 5: p = 0.829, size 2.2
    assert np.isnan(f["tsb_level"][0, 0])
    assert f["tsb_level"][0, 1:].tolist() == pytest.approx([2.0, 1.8, 1.8, 1.62, 0.829 * 2.2], rel=1e-5)
    assert np.isnan(f["days_since_last_sale"][0, 0]) and f["days_since_last_sale"][0, 1:].tolist() == [0, 1, 2, 3, 0]
    assert f["zero_share_28d"][0, 4] == pytest.approx(2 / 3)  # zeros on 2 of the 3 days with a row


def test_launch_age_is_capped_and_date_of_year_needs_a_year_of_history():
    from models.demand.features import feature_columns
    from models.demand.forecaster import keeps_date_of_year, sized_params

    panel = build_panel(_demand({("S", "A"): [1.0] * 100}))
    spec = FeatureSpec(launch_age_cap_days=30)
    rows = pd.DataFrame({"store_id": ["S", "S"], "sku_id": ["A", "A"], "dt": [START + dt.timedelta(days=10),
                                                                               START + dt.timedelta(days=99)],
                         "origin": [START + dt.timedelta(days=9), START + dt.timedelta(days=98)],
                         "list_price": 100.0, "offer_discount_pct": 0.0})
    columns, _ = feature_columns(panel, history_features(panel, spec), rows, _attrs(), spec)
    assert columns["sku_age_days"].tolist() == [10, 30]  # a young item's age, then the cap: no clock
    assert not keeps_date_of_year(FeatureSpec(), 300) and keeps_date_of_year(FeatureSpec(), 365 + 28)
    assert keeps_date_of_year(FeatureSpec(date_of_year="always"), 30)
    assert not keeps_date_of_year(FeatureSpec(date_of_year="never"), 3000)
    # one series of 400 days: leaves of 10 rows, not four leaves of 100; millions of rows: the config's
    assert sized_params({"min_data_in_leaf": 100, "num_leaves": 63}, 400) == \
        {"min_data_in_leaf": 10, "num_leaves": 10}
    assert sized_params({"min_data_in_leaf": 100, "num_leaves": 63}, 2_000_000) == \
        {"min_data_in_leaf": 100, "num_leaves": 63}
