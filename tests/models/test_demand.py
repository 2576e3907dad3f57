"""The demand family on the tiny lake: fit, forecast, what-if, intervals, save/load, evaluation
against baselines, and the training job's MLflow run and registered version."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from jobs.train import read
from models.demand.config import DemandConfig
from models.demand.evaluate import baselines, evaluate
from models.demand.forecaster import DemandForecaster

FAST = DemandConfig.model_validate({"training": {"num_boost_round": 120, "history_days": 150,
                                                 "params": {"objective": "tweedie", "tweedie_variance_power": 1.2,
                                                            "learning_rate": 0.08, "num_leaves": 31,
                                                            "min_data_in_leaf": 40}}})
# four origins a week apart, one fit for all of them
WEEKLY = FAST.model_copy(update={"evaluation": FAST.evaluation.model_copy(update={"origins": 4, "spacing_days": 7})})


@pytest.fixture(scope="module")
def demand_data(tiny_lake):
    return read("demand", FAST, tiny_lake)


@pytest.fixture(scope="module")
def fitted(demand_data, ray_session):
    data, _ = demand_data
    origin = max(data.demand["dt"]) - dt.timedelta(days=28)
    forecaster = DemandForecaster(FAST).fit(data, origin=origin)
    holdout = data.demand[(data.demand["dt"] > origin)]
    forecaster.calibrate(forecaster.predict(holdout), holdout["units_sold"].to_numpy(dtype=float))
    return forecaster


def test_forecast_has_28_days_of_ordered_intervals(fitted, demand_data):
    data, _ = demand_data
    store = "ON-TMALL"
    skus = data.demand[data.demand["store_id"] == store]["sku_id"].unique()[:3].tolist()
    frame = fitted.forecast(store, skus)
    assert len(frame) == 3 * 28
    assert (frame["dt"].min(), frame["dt"].max()) == (fitted.origin_ + dt.timedelta(days=1),
                                                      fitted.origin_ + dt.timedelta(days=28))
    assert (frame["p10"] <= frame["p50"]).all() and (frame["p50"] <= frame["p90"]).all() and (frame["p10"] >= 0).all()
    assert frame["p50"].sum() > 0


def test_forecast_many_answers_each_request_as_forecast_does(fitted, demand_data):
    """A batch of served forecasts is computed together; each request must get exactly its own
    answer, and a bad request its own error, whatever else is in the batch."""
    data, _ = demand_data
    stores = data.demand["store_id"].unique()[:3].tolist()
    asks = [(stores[0], data.demand[data.demand["store_id"] == stores[0]]["sku_id"].unique()[:3].tolist(), 28, None),
            (stores[1], ["XX-000000"], 7, None),
            (stores[1], data.demand[data.demand["store_id"] == stores[1]]["sku_id"].unique()[:2].tolist(), 5,
             {"discount": 0.3}),
            (stores[2], data.demand["sku_id"].unique()[:1].tolist(), 40, None),
            (stores[2], data.demand[data.demand["store_id"] == stores[2]]["sku_id"].unique()[:4].tolist(), 14,
             {"promo": True})]
    answers = fitted.forecast_many(asks)
    assert isinstance(answers[1], KeyError) and "XX-000000" in str(answers[1])
    assert isinstance(answers[3], ValueError) and "horizon_days" in str(answers[3])
    for ask, answer in zip(asks, answers):
        if isinstance(answer, Exception):
            continue
        alone = fitted.forecast(*ask)
        assert len(answer) == len(ask[1]) * ask[2]
        pd.testing.assert_frame_equal(answer, alone)


def test_forecast_arrays_are_the_frames_as_day_by_sku_matrices(fitted, demand_data):
    """Serving renders forecasts from forecast_arrays (no frames); forecast() answers frames. Both
    must give the same numbers."""
    data, _ = demand_data
    store = data.demand["store_id"].iloc[0]
    skus = data.demand[data.demand["store_id"] == store]["sku_id"].unique()[:3].tolist()
    [arrays] = fitted.forecast_arrays([(store, skus, 10, {"promo": True})])
    frame = fitted.forecast(store, skus, 10, {"promo": True})
    assert arrays.p50.shape == (10, 3) and arrays.days[0] == fitted.origin_ + dt.timedelta(days=1)
    for d, day in enumerate(arrays.days):
        for i, sku in enumerate(skus):
            row = frame[(frame["dt"] == day) & (frame["sku_id"] == sku)]
            assert row[["p10", "p50", "p90", "offer_discount_pct"]].to_numpy().tolist() == \
                [[arrays.p10[d, i], arrays.p50[d, i], arrays.p90[d, i], arrays.offer_discount_pct[d, i]]]
    assert (arrays.offer_discount_pct >= 0.2).all()


def test_the_plan_table_prices_every_pair_as_the_day_by_day_join_does(fitted):
    """Served forecasts gather planned prices and discounts from a per-model table; it must say
    what the Arrow joins over prices and promotions say, on every day of the horizon."""
    days = [fitted.origin_ + dt.timedelta(days=h) for h in range(1, 29)]
    pairs = fitted.panel_.series[["store_id", "sku_id"]].reset_index(drop=True)
    fast = fitted.planned_rows(pairs, days)
    slow = fitted._planned_rows_each_day(pairs, days)
    assert (slow["offer_discount_pct"] > 0).any()  # promotions run in this window: a real check
    pd.testing.assert_frame_equal(fast[slow.columns].reset_index(drop=True), slow.reset_index(drop=True),
                                  check_dtype=False)
    # a day outside the horizon takes the day-by-day path and still answers
    later = fitted.planned_rows(pairs.head(3), [fitted.origin_ + dt.timedelta(days=40)])
    assert len(later) == 3 and later["list_price"].notna().all()


def test_rows_scored_by_the_pyfunc_are_priced_from_the_plan_as_the_day_by_day_join_prices_them(fitted):
    """The pyfunc gathers each row's planned price from the plan table; rows in any order, days
    mixed, repeats included, answer exactly as the day-by-day path does."""
    from models.demand.pyfunc import planned_each_day, score_rows

    pairs = fitted.panel_.series[["store_id", "sku_id"]].reset_index(drop=True)
    rng = np.random.default_rng(3)
    pick = rng.integers(0, len(pairs), 400)
    days = np.datetime64(fitted.origin_, "D") + rng.integers(1, 29, 400)
    rows = pd.DataFrame({"store_id": pairs["store_id"].to_numpy(object)[pick], "sku_id": pairs["sku_id"].to_numpy(object)[pick],
                         "dt": days.astype(str)})
    rows = pd.concat([rows, rows.head(5)], ignore_index=True)  # repeats answer once per input row
    gathered = fitted.planned_prices(rows["store_id"].to_numpy(object), rows["sku_id"].to_numpy(object),
                                     rows["dt"].to_numpy("datetime64[D]"))
    joined = planned_each_day(fitted, rows.assign(dt=rows["dt"].to_numpy("datetime64[D]").astype(object)))
    assert (joined[1] > 0).any()
    np.testing.assert_array_equal(gathered[0], joined[0])
    np.testing.assert_array_equal(gathered[1], joined[1])
    scored = score_rows(fitted, rows)
    assert len(scored) == len(rows) and (scored["p10"] <= scored["p50"]).all() and (scored["p50"] <= scored["p90"]).all()
    # outside the plan (a day past the horizon): the day-by-day path answers
    late = rows.head(3).assign(dt=str(fitted.origin_ + dt.timedelta(days=40)))
    assert fitted.planned_prices(late["store_id"].to_numpy(object), late["sku_id"].to_numpy(object),
                                 late["dt"].to_numpy("datetime64[D]")) is None
    unknown = rows.head(2).assign(sku_id="NO-SUCH-SKU")
    assert fitted.planned_prices(unknown["store_id"].to_numpy(object), unknown["sku_id"].to_numpy(object),
                                 unknown["dt"].to_numpy("datetime64[D]")) is None
    explicit = score_rows(fitted, rows.assign(list_price=joined[0], offer_discount_pct=joined[1]))
    pd.testing.assert_frame_equal(scored, explicit)


def test_a_price_cut_raises_the_forecast_of_an_elastic_sku(fitted, tiny_lake):
    truth = tiny_lake.read("truth", "products").to_pandas()
    demand = fitted.tables_["products"]
    sold = set(fitted.panel_.series[fitted.panel_.series["store_id"] == "ON-TMALL"]["sku_id"])
    elastic = truth[truth["sku_id"].isin(sold)].sort_values("true_elasticity", ascending=False)["sku_id"].iloc[0]
    list_price = float(demand.set_index("sku_id").loc[elastic, "list_price"])
    base = fitted.forecast("ON-TMALL", [elastic], 14)["p50"].sum()
    cut = fitted.forecast("ON-TMALL", [elastic], 14, {"price": list_price * 0.7})["p50"].sum()
    promo = fitted.forecast("ON-TMALL", [elastic], 14, {"discount": 0.3})["p50"].sum()
    assert cut > base * 1.05 and promo > base * 1.05


def test_forecast_refuses_unknown_ids_and_bad_horizons(fitted):
    with pytest.raises(KeyError, match="unknown store_id 'NOPE'"):
        fitted.forecast("NOPE", ["x"])
    with pytest.raises(KeyError, match="unknown sku_id"):
        fitted.forecast("ON-TMALL", ["NO-SUCH"])
    with pytest.raises(ValueError, match="horizon_days must be 1–28"):
        fitted.forecast("ON-TMALL", [], 29)
    with pytest.raises(ValueError, match="what_if.discount"):
        fitted.forecast("ON-TMALL", fitted.tables_["products"]["sku_id"].iloc[:1].tolist(), 3, {"discount": 2})


def test_saved_forecaster_predicts_exactly_the_same(fitted, tmp_path):
    folder = fitted.save(tmp_path / "forecaster")
    loaded = DemandForecaster.load(folder)
    skus = fitted.panel_.series["sku_id"].unique()[:5].tolist()
    store = fitted.panel_.series["store_id"].iloc[0]
    skus = fitted.panel_.series[fitted.panel_.series["store_id"] == store]["sku_id"].unique()[:5].tolist()
    pd.testing.assert_frame_equal(fitted.forecast(store, skus), loaded.forecast(store, skus))
    # 240 days of tiny lake: no year before the forecast days, so no day-of-year features to memorise
    assert not {"day_of_year", "month", "day_of_month"} & set(loaded.features_order_)
    assert {"tsb_level", "zero_share_28d", "days_since_last_sale"} <= set(loaded.features_order_)


def test_baselines_repeat_the_last_week_and_average_four():
    rows = [{"store_id": "S", "sku_id": "A", "dt": dt.date(2025, 1, 1) + dt.timedelta(days=i), "units_sold": float(i % 7)}
            for i in range(28)]
    history = pd.DataFrame(rows)
    origin = dt.date(2025, 1, 28)
    holdout = pd.DataFrame({"store_id": "S", "sku_id": ["A", "A", "B"],
                            "dt": [origin + dt.timedelta(days=1), origin + dt.timedelta(days=8), origin + dt.timedelta(days=1)]})
    out = baselines(history, holdout, origin)
    assert out["seasonal_naive"].tolist() == [0.0, 0.0, 0.0]  # day 29 repeats day 22 (i % 7 == 0)
    assert out["moving_average"].tolist() == [3.0, 3.0, 0.0]


def test_an_origin_learns_from_earlier_origins_only_what_had_happened_by_then():
    """Weekly origins' holdouts overlap: origin k may calibrate and choose its blend only on the
    rows of earlier origins whose day is on or before its own."""
    from models.demand.evaluate import known_at

    days = np.array(["2025-01-02", "2025-01-08", "2025-01-09"], dtype="datetime64[D]")
    first = (np.array([1.0, 2.0, 3.0]), days)
    second = (np.array([4.0]), np.array(["2025-01-08"], dtype="datetime64[D]"))
    values, seen = known_at([first, second], dt.date(2025, 1, 8))
    assert values.tolist() == [1.0, 2.0, 4.0] and seen.max() == np.datetime64("2025-01-08")
    assert known_at([first], dt.date(2025, 1, 1)) is None and known_at([], dt.date(2025, 1, 8)) is None
    spec = DemandConfig.model_validate({"evaluation": {"origins": 3, "spacing_days": 14}}).evaluation
    assert spec.origin_days(dt.date(2025, 3, 31), 28) == [dt.date(2025, 2, 3), dt.date(2025, 2, 17), dt.date(2025, 3, 3)]
    assert spec.days_scored(28) == 56


def test_rolling_origin_evaluation_beats_the_baselines(demand_data, ray_session):
    data, truth = demand_data
    evaluation, last = evaluate(data, WEEKLY, truth)
    m = evaluation.metrics
    assert [o.origin for o in evaluation.origins] == WEEKLY.evaluation.origin_days(max(data.demand["dt"]), 28)
    assert len(evaluation.origins) == 4 and evaluation.origins[1].origin - evaluation.origins[0].origin == dt.timedelta(7)
    # one fit serves the four origins (refit_days 28), forecasting from each origin's own day
    assert [o.metrics["model_age_days"] for o in evaluation.origins] == [0, 7, 14, 21]
    # the first origin has nothing earlier to calibrate on or blend with; the next ones do
    assert "interval_coverage_p10_p90" not in evaluation.origins[0].metrics
    assert evaluation.origins[0].metrics["blend_model_share"] == 1.0
    assert all("interval_coverage_p10_p90" in o.metrics for o in evaluation.origins[1:])
    assert m["wrmsse"] < m["wrmsse_seasonal_naive"] and m["wrmsse"] < m["wrmsse_moving_average"] * 1.05
    assert m["wrmsse_oracle"] < m["wrmsse"] < 1.3 * m["wrmsse_oracle"]
    assert 0.6 < m["interval_coverage_p10_p90"] < 0.95
    assert last is not None and last.residual_quantiles_ is not None


def test_a_lake_with_only_required_columns_and_no_truth_trains(raw_copy, ray_session):
    """The contract's promise for brands that bring their own data: required columns only, no
    assortment, no prices, no truth/ — the family still trains, evaluates and forecasts."""
    import shutil

    import pyarrow.parquet as pq

    from jobs import merge
    from lake.contract import RAW_TABLES

    for name, spec in RAW_TABLES.items():
        if not spec.required_table:
            shutil.rmtree(raw_copy.table_dir("raw", name))
            continue
        for day in raw_copy.partitions("raw", name) or [None]:
            for f in raw_copy.files("raw", name, day):
                pq.write_table(pq.read_table(f, columns=list(spec.required_columns)), f)
    assert merge.main(merge.MergeConfig(), raw_copy).exit_code == 0
    data, truth = read("demand", FAST, raw_copy)
    assert truth is None and data.prices is None
    evaluation, last = evaluate(data, FAST, truth)
    assert "wrmsse_oracle" not in evaluation.metrics
    assert evaluation.metrics["wrmsse"] < evaluation.metrics["wrmsse_seasonal_naive"]
    store = data.demand["store_id"].iloc[0]
    frame = last.forecast(store, data.demand[data.demand["store_id"] == store]["sku_id"].unique()[:2].tolist(), 7)
    assert len(frame) == 14 and frame["p50"].notna().all()


def test_only_the_evaluated_days_of_truth_are_read(tiny_lake, demand_data):
    """The oracle is scored on the evaluation's holdout days only; reading all of truth cost
    2 GB more at medium scale. The days read must be exactly the days the holdouts cover (the
    horizon after the first origin to the lake's end), with the same values as reading everything."""
    import dataclasses

    from jobs import catalogue
    from models.demand.training import evaluated_days, inputs

    data, _ = demand_data
    days = evaluated_days(DemandConfig())
    assert days == 2 * 28  # two origins a horizon apart (configs/demand.yaml)
    assert evaluated_days(WEEKLY) == 28 + 3 * 7  # four a week apart, each scored 28 days ahead
    spec = inputs(DemandConfig())["truth"]
    assert spec.days == days
    recent, covered = catalogue.read_input(tiny_lake, spec)
    everything, _ = catalogue.read_input(tiny_lake, dataclasses.replace(spec, days=None))
    last = max(data.demand["dt"])
    assert covered == sorted(recent["dt"].unique()) == [last - dt.timedelta(days=k) for k in range(days - 1, -1, -1)]
    expected = everything[everything["dt"] > last - dt.timedelta(days=days)].reset_index(drop=True)
    pd.testing.assert_frame_equal(recent.reset_index(drop=True), expected)


def test_the_blend_with_the_simple_forecasts_is_chosen_on_the_backtest_and_kept_when_saved(fitted, tmp_path):
    """blend.choose_weights gives a simple forecast all the weight where it alone is right, the
    model all of it where the model is; a forecaster told to serve the moving average (or TSB)
    forecasts exactly that, and the saved forecaster keeps its weights. A version saved with one
    number per segment (before TSB) reads as the model against the moving average."""
    import copy

    from models.demand import blend

    rng = np.random.default_rng(3)
    actual = rng.poisson(3.0, 600).astype(float)
    noise = rng.normal(0, 2.0, 600)
    segment = np.repeat([0, 1, 2], 200)
    model, average, tsb = (np.where(segment == s, actual, actual + rng.permutation(noise)) for s in range(3))
    candidates = np.column_stack([model, average, tsb])
    assert blend.choose_weights(candidates, actual, segment, np.ones(600)) == {
        0: [1.0, 0.0, 0.0], 1: [0.0, 1.0, 0.0], 2: [0.0, 0.0, 1.0]}
    assert (blend.apply(candidates, segment, {}) == model).all()  # no weights: the model
    assert blend.as_mix(0.7) == pytest.approx([0.7, 0.3, 0.0]) and blend.model_share({0: [0.5, 0.5, 0], 1: 1.0}) == 0.75

    series = fitted.panel_.series.head(3)
    rows = fitted.planned_rows(series[["store_id", "sku_id"]], [fitted.origin_ + dt.timedelta(days=1)])
    simple = fitted.simple_forecasts(rows["store_id"], rows["sku_id"])
    assert (simple >= 0).all() and simple.shape == (3, 2)
    segments = range(len(blend.LEVEL_EDGES) + 1)
    for column, mix in ((0, [0.0, 1.0, 0.0]), (1, [0.0, 0.0, 1.0])):
        served = copy.copy(fitted).blend({s: mix for s in segments})
        assert served.predict(rows) == pytest.approx(simple[:, column])
    assert fitted.predict(rows) != pytest.approx(simple[:, 0])  # the fitted model's own weights (none) left alone
    average_only = copy.copy(fitted).blend({s: 0.0 for s in segments})  # the format of older versions
    assert average_only.predict(rows) == pytest.approx(simple[:, 0])
    again = DemandForecaster.load(average_only.save(tmp_path / "blended"))
    assert again.blend_ == {s: [0.0, 1.0, 0.0] for s in segments}
    assert again.predict(rows) == pytest.approx(simple[:, 0])


def test_a_model_fits_in_a_process_without_a_ray_cluster(tiny_lake):
    """A model is fitted where its executor says, in this process by default: a notebook needs no
    cluster (before, fit() asked ray.nodes() and failed with 'Ray has not been started yet')."""
    import subprocess
    import sys

    code = f"""
import ray
from jobs.train import read
from lake.store import Lake
from models.demand.forecaster import DemandForecaster
from tests.models.test_demand import FAST

data, _ = read("demand", FAST, Lake({str(tiny_lake.root)!r}))
config = FAST.model_copy(update={{"training": FAST.training.model_copy(update={{"num_boost_round": 10}})}})
model = DemandForecaster(config).fit(data)
assert not ray.is_initialized()
print(model.layout_.describe(), model.booster_.current_iteration())
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-1] == "10" and "single: 1 worker(s)" in done.stdout, done.stdout
