"""`quanyu train location` and `quanyu sites recommend` end to end on the tiny lake: an MLflow
run with the issue's metric keys, plots and dataset inputs; a registered version with the alias
`candidate` that mlflow.pyfunc loads; the CLI's table, JSON and CSV and its messages."""

from __future__ import annotations

import csv
import io
import json

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from jobs.recommend_sites import CSV_COLUMNS
from tests.jobs.test_cli import run

KEYS = ("spearman", "spearman_population_baseline", "spearman_gravity_baseline", "spearman_oracle", "ndcg_at_10")


@pytest.fixture(scope="module")
def home(tiny_lake, ray_session, tmp_path_factory):
    return tmp_path_factory.mktemp("quanyu-home")


@pytest.fixture
def trained(home, tiny_lake, monkeypatch, capsys):
    monkeypatch.setenv("QUANYU_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{home / 'mlflow.db'}"
    if not (home / "trained").exists():
        # the tiny lake's tables, with a brand that counts in euros (settings.yaml is the lake's own)
        lake = home / "lake"
        lake.mkdir()
        for zone in ("raw", "curated", "truth"):
            (lake / zone).symlink_to(tiny_lake.root / zone)
        (lake / "settings.yaml").write_text("currency: EUR\n")
        code, out = run(["train", "location", "--lake", str(lake)], capsys)
        assert code == 0, out
        assert "registered quanyu-location version 1 (alias candidate)" in out and "spearman_oracle" in out
        assert "next: quanyu models promote location 1" in out  # the first train → predict has a next step
        # two stores a city: the model cannot beat its baselines, and says so on the version and the console
        assert "warning: quanyu-location v1 does not beat its baselines (spearman" in out
        tags = MlflowClient(uri).get_model_version("quanyu-location", "1").tags
        assert tags["below_baseline"].startswith("spearman") and "does not beat spearman_" in tags["below_baseline"]
        (home / "trained").write_text(out)
    mlflow.set_tracking_uri(uri)
    return uri


def test_run_logs_the_issue_keys_plots_and_inputs(trained):
    client = MlflowClient(trained)
    version = client.get_model_version_by_alias("quanyu-location", "candidate")
    run = client.get_run(version.run_id)
    assert set(KEYS) <= set(run.data.metrics)
    assert run.data.tags["family"] == "location" and run.data.params["cities"] == "2"
    plots = {a.path for a in client.list_artifacts(version.run_id, "plots")}
    assert plots == {"plots/predicted_vs_actual.png", "plots/feature_importance.png"}
    # the report's table beside the run: every training store's out-of-fold prediction
    table = pd.read_csv(client.download_artifacts(version.run_id, "cv_predictions.csv"))
    assert len(table) == int(run.data.params["training_stores"]) and table["predicted"].notna().all()
    assert sorted(d.dataset.name for d in run.inputs.dataset_inputs) == ["candidate_sites", "store_performance"]


def test_the_registered_version_loads_with_pyfunc_and_scores_sites(trained):
    model = mlflow.pyfunc.load_model("models:/quanyu-location@candidate")
    recommender = model.unwrap_python_model().recommender
    ids = recommender.sites["site_id"].head(4)
    got = model.predict(pd.DataFrame({"site_id": ids}))
    assert got["predicted_revenue"].to_numpy() == pytest.approx(recommender.sites["predicted_revenue"].head(4).to_numpy())
    assert (got["predicted_revenue"] > 0).all()


def test_sites_recommend_prints_table_json_and_csv(trained, capsys):
    code, out = run(["sites", "recommend", "--city", "Shanghai", "--k", "3", "--alias", "candidate"], capsys)
    assert code == 0, out
    assert out.startswith("Shanghai: 3 site(s) by net_gain, quanyu-location v1") and " EUR/yr" in out
    code, out = run(["sites", "recommend", "--city", "Shanghai", "--k", "3", "--alias", "candidate",
                     "--min-distance-km", "1", "--format", "json"], capsys)
    answer = json.loads(out)
    assert code == 0 and answer["model_version"] == "1" and len(answer["picks"]) == 3
    assert answer["data_date"] == "2025-08-28" and answer["currency"] == "EUR"
    code, out = run(["sites", "recommend", "--city", "Beijing", "--k", "2", "--alias", "candidate",
                     "--objective", "coverage", "--format", "csv"], capsys)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(rows) == 2 and tuple(rows[0]) == CSV_COLUMNS
    assert all(float(r["covered_population"]) >= 0 for r in rows)


@pytest.mark.parametrize("args, message", [
    (["--city", "Atlantis", "--k", "3", "--alias", "candidate"], "unknown city 'Atlantis'"),
    (["--city", "Shanghai", "--k", "3", "--max-rent", "1", "--alias", "candidate"], "satisfy the constraints"),
    (["--city", "Shanghai", "--k", "3"], "no quanyu-location version with alias 'champion'"),
    (["--city", "Shanghai", "--k", "0", "--alias", "candidate"], "0 is not in the range 1<=x<=50"),
])
def test_sites_recommend_says_what_is_wrong(trained, args, message, capsys):
    code, out = run(["sites", "recommend", *args], capsys)
    assert code != 0 and message in out and "Traceback" not in out
