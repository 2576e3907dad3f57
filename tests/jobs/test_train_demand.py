"""`quanyu train demand` end to end on the tiny lake: an MLflow run with the issue's metric keys,
plots, a dataset input, lineage tags, and a registered version with the alias `candidate` that
mlflow.pyfunc loads and that answers like the forecaster it wraps."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from jobs import train
from models.demand.forecaster import DemandForecaster
from tests.models.test_demand import FAST

KEYS = ("wrmsse", "wrmsse_seasonal_naive", "wrmsse_moving_average", "wrmsse_oracle", "wape", "interval_coverage_p10_p90")


@pytest.fixture(scope="module")
def trained(tiny_lake, ray_session, tmp_path_factory):
    home = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{home / 'mlflow.db'}"
    result = train.main("demand", FAST, tiny_lake, uri, artifact_root=str(home / "mlartifacts"))
    mlflow.set_tracking_uri(uri)
    return result, uri


def test_run_logs_metrics_plots_inputs_and_lineage(trained):
    result, uri = trained
    client = MlflowClient(uri)
    run = client.get_run(result.run_id)
    assert set(KEYS) <= set(run.data.metrics)
    assert run.data.metrics["wrmsse"] < run.data.metrics["wrmsse_seasonal_naive"]
    # against the best simple forecast, pooled over the origins' series, with a paired interval
    m = run.data.metrics
    assert m["wrmsse_ratio_best_baseline_ci_low"] <= m["wrmsse_ratio_best_baseline"] <= \
        m["wrmsse_ratio_best_baseline_ci_high"]
    assert run.data.params["best_baseline"] in ("seasonal_naive", "moving_average", "tsb")
    assert {"wrmsse_tsb", "interval_coverage_p10_p90_units"} <= set(m)
    assert run.data.tags["family"] == "demand" and run.data.tags["lake_last_dt"] == "2025-08-28"
    assert len(run.data.tags["git_commit"]) in (7, 40) or run.data.tags["git_commit"] == "unknown"
    artifacts = {a.path for a in client.list_artifacts(result.run_id, "plots")}
    assert artifacts == {"plots/forecast_vs_actual.png", "plots/feature_importance.png"}
    assert [d.dataset.name for d in run.inputs.dataset_inputs] == ["demand_daily"]
    assert run.info.artifact_uri.startswith(Path(uri.removeprefix("sqlite:///")).parent.as_uri())


def test_registered_candidate_loads_with_pyfunc_and_matches_the_forecaster(trained, tmp_path):
    result, uri = trained
    client = MlflowClient(uri)
    version = client.get_model_version_by_alias("quanyu-demand", "candidate")
    assert str(version.version) == result.version
    model = mlflow.pyfunc.load_model("models:/quanyu-demand@candidate")
    local = mlflow.artifacts.download_artifacts(f"models:/quanyu-demand/{result.version}", dst_path=str(tmp_path))
    forecaster = DemandForecaster.load(f"{local}/artifacts/forecaster")
    store = forecaster.panel_.series["store_id"].iloc[0]
    skus = forecaster.panel_.series[forecaster.panel_.series["store_id"] == store]["sku_id"].unique()[:3].tolist()
    expected = forecaster.forecast(store, skus, 5)
    rows = expected[["store_id", "sku_id", "dt"]].assign(dt=lambda f: f["dt"].astype(str))
    got = model.predict(rows)
    assert got["p50"].to_numpy() == pytest.approx(expected["p50"].to_numpy())
    assert (got["p90"] >= got["p50"]).all()
    assert result.origin == dt.date(2025, 8, 28)
    # a row asked twice (two callers' rows scored together, or one caller's repeat) is one answer per row
    twice = model.predict(pd.concat([rows, rows.iloc[::-1]], ignore_index=True))
    assert len(twice) == 2 * len(rows)
    assert twice["p50"].to_numpy() == pytest.approx(list(expected["p50"]) + list(expected["p50"])[::-1])


def test_batch_scoring_writes_28_days_for_every_active_series(trained, tiny_lake, tmp_path):
    import shutil

    from jobs import predict_demand
    from lake.store import Lake
    from models.registry import CHAMPION, set_alias

    result, uri = trained
    set_alias("demand", result.version, CHAMPION, MlflowClient(uri))
    lake = Lake(tmp_path / "lake")
    out = predict_demand.main(lake, uri, alias=CHAMPION, batch_series=100)
    forecasts = pd.read_parquet(out.path)
    assert out.rows == len(forecasts) == out.series * 28
    assert forecasts["dt"].nunique() == 28 and str(forecasts["origin"].iloc[0])[:10] == "2025-08-28"
    assert (forecasts["p10"] <= forecasts["p50"]).all() and (forecasts["p50"] <= forecasts["p90"]).all()
    again = predict_demand.main(lake, uri, alias=CHAMPION, batch_series=100)  # a rerun replaces, not appends
    assert len(pd.read_parquet(again.path)) == len(forecasts)
    shutil.rmtree(lake.root)


@pytest.mark.parametrize("horizon", [14, 56])
def test_a_config_s_horizon_is_trained_gated_and_served_to_its_last_day(horizon, tiny_lake, ray_session, tmp_path):
    """The horizon is the config's (1–91 days), not 28: the gate's sanity check asks the model for
    its own horizon (a 14-day model was refused for failing a 28-day request) and the API serves
    every day of it (a 56-day model could not be asked for days 29–56), saying the range beyond."""
    from jobs.promotion import sanity_problems
    from models.demand.api import forecast
    from serving.families import FamilyModel

    # a small model: what is tested is the horizon's path from the config to the API, not accuracy
    config = FAST.model_copy(update={"features": FAST.features.model_copy(update={"horizon": horizon}),
                                     "training": FAST.training.model_copy(update={"num_boost_round": 15})})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = train.main("demand", config, tiny_lake, uri, artifact_root=str(tmp_path / "mlartifacts"))
    model = FamilyModel("demand", uri, alias="candidate")
    model.check()
    loaded = model.current
    assert loaded is not None and loaded.version == result.version, model.last_error
    assert sanity_problems("demand", loaded.predictor) == []

    forecaster = loaded.predictor
    store = forecaster.panel_.series["store_id"].iat[0]
    sku = forecaster.panel_.series[forecaster.panel_.series["store_id"] == store]["sku_id"].iat[0]
    status, body = forecast(loaded, {"store_id": store, "sku_ids": [sku]})
    assert status == 200, body
    days = body["forecasts"][0]["days"]
    assert len(days) == horizon
    assert days[-1]["date"] == (forecaster.origin_ + dt.timedelta(days=horizon)).isoformat()
    status, body = forecast(loaded, {"store_id": store, "sku_ids": [sku], "horizon_days": horizon + 1})
    assert status == 409 and f"1–{horizon}" in body["detail"], body  # valid, beyond this version
