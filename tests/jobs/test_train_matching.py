"""`quanyu train matching` end to end on the tiny lake: an MLflow run with the issue's metric
keys, the NDCG-by-activity plot and dataset inputs; a registered version with the alias
`candidate` that mlflow.pyfunc loads and that answers like the recommender it wraps."""

from __future__ import annotations

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from tests.jobs.test_cli import run

KEYS = ("ndcg_at_10", "ndcg_at_10_popularity", "ndcg_at_10_segment_popularity", "ndcg_at_10_oracle",
        "recall_at_10", "candidate_recall")


@pytest.fixture(scope="module")
def trained(tiny_lake, ray_session, tmp_path_factory):
    home = tmp_path_factory.mktemp("quanyu-home")
    config = home / "matching.yaml"
    config.write_text("training: {num_boost_round: 30, max_members: 600}\nevaluation: {max_members: 600}\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("QUANYU_HOME", str(home))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        with pytest.raises(SystemExit) as done:
            from jobs.cli import main

            main(["train", "matching", "--lake", str(tiny_lake.root), "--config", str(config)])
    assert done.value.code == 0
    uri = f"sqlite:///{home / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    return uri, home


def test_run_logs_the_issue_keys_the_plot_and_inputs(trained):
    client = MlflowClient(trained[0])
    version = client.get_model_version_by_alias("quanyu-matching", "candidate")
    run = client.get_run(version.run_id)
    assert set(KEYS) <= set(run.data.metrics)
    assert run.data.metrics["ndcg_at_10"] > run.data.metrics["ndcg_at_10_popularity"]
    m = run.data.metrics  # the ranker against the best popularity ranking, paired over holdout members
    assert m["ndcg_at_10_diff_best_baseline_ci_low"] <= m["ndcg_at_10_diff_best_baseline"] <= \
        m["ndcg_at_10_diff_best_baseline_ci_high"]
    assert run.data.tags["family"] == "matching"
    assert {a.path for a in client.list_artifacts(version.run_id, "plots")} == {"plots/ndcg_by_activity.png"}
    # the report's table beside the run: NDCG@10 per activity bucket, the model's and the baselines'
    table = pd.read_csv(client.download_artifacts(version.run_id, "ndcg_by_activity.csv"))
    assert {"bucket", "members", "model", "popularity"} <= set(table.columns) and table["members"].sum() > 0
    assert sorted(d.dataset.name for d in run.inputs.dataset_inputs) == ["interactions", "members", "products"]


def test_the_registered_version_answers_like_its_recommender(trained):  # noqa: ARG001 (sets the URI)
    model = mlflow.pyfunc.load_model("models:/quanyu-matching@candidate")
    recommender = model.unwrap_python_model().recommender
    member = recommender.state.members["member_id"].iat[3]
    got = model.predict(pd.DataFrame({"member_id": [member], "channel": ["offline"], "k": [6]}))
    expected = recommender.recommend(member, 6, "offline")
    assert got["sku_id"].tolist() == [i["sku_id"] for i in expected.items]
    assert got["rank"].tolist() == list(range(1, 7))


def test_matching_commands_answer_for_a_member_and_a_product(trained, monkeypatch, capsys):
    """`quanyu matching recommend / audience`: the registered version's answers from the command
    line (no Ray, no Python snippet), as text and JSON, and what is wrong when asked wrongly."""
    import json

    monkeypatch.setenv("QUANYU_HOME", str(trained[1]))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    recommender = mlflow.pyfunc.load_model("models:/quanyu-matching@candidate").unwrap_python_model().recommender
    member = recommender.state.members["member_id"].iat[3]
    code, out = run(["matching", "recommend", "--member", member, "--k", "4", "--alias", "candidate", "--json"], capsys)
    assert code == 0, out
    answer = json.loads(out)
    assert answer["model_version"] == "1" and answer["member_id"] == member
    assert [i["sku_id"] for i in answer["items"]] == [i["sku_id"] for i in recommender.recommend(member, 4).items]
    code, out = run(["matching", "recommend", "--member", member, "--k", "4", "--alias", "candidate"], capsys)
    assert code == 0 and out.startswith(f"{member}: 4 product(s), quanyu-matching v1") and out.count("\n") == 5
    code, out = run(["matching", "audience", "--category", "beauty", "--list-price", "199", "--k", "5",
                     "--alias", "candidate", "--json"], capsys)
    answer = json.loads(out)
    assert code == 0 and answer["new_product"] and len(answer["members"]) == 5 and answer["segments"]
    sku = recommender.state.items["sku_id"].iat[0]
    code, out = run(["matching", "audience", "--sku", sku, "--k", "3", "--alias", "candidate"], capsys)
    assert code == 0 and out.startswith(f"{sku}: 3 member(s)") and "segments that fit best" in out
    for args, message in ((["audience", "--sku", "NOPE", "--alias", "candidate"], "unknown sku_id 'NOPE'"),
                          (["audience", "--k", "3", "--alias", "candidate"], "give --sku, or a new product's"),
                          (["recommend", "--member", member], "no quanyu-matching version with alias 'champion'")):
        code, out = run(["matching", *args], capsys)
        assert code != 0 and message in out and "Traceback" not in out, out


def test_train_matching_on_an_unmerged_lake_says_what_to_do(tmp_path, capsys):
    code, out = run(["train", "matching", "--lake", str(tmp_path / "empty")], capsys)
    assert code != 0 and "run quanyu data merge first" in out and "Traceback" not in out
