"""Lineage by snapshot: a model version records the lake commit and the snapshot of each curated
table it read, `quanyu models show` prints them, and `quanyu train --as-of-commit` trains on
exactly those tables again after newer days were merged: the same predictions."""

from __future__ import annotations

import json
import shutil

import mlflow
import pandas as pd
import yaml
from mlflow import MlflowClient

from jobs import merge
from lake.contract import FACT_TABLES
from tests.jobs.test_cli import run
from tests.models.test_demand import FAST


def test_a_version_retrained_from_its_lake_commit_predicts_the_same(raw_copy, ray_session, tmp_path, monkeypatch,
                                                                   capsys):
    monkeypatch.setenv("QUANYU_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}"
    config = tmp_path / "demand.yaml"
    config.write_text(yaml.safe_dump(FAST.model_dump(mode="json")))
    lake = raw_copy
    late = lake.partitions("raw", "online_orders")[-10:]  # ten days that arrive after the first training
    aside = tmp_path / "aside"
    for table in FACT_TABLES:
        for day in late:
            if lake.partition_dir("raw", table, day).exists():
                shutil.move(lake.partition_dir("raw", table, day), aside / table / f"dt={day}")
    first = merge.main(merge.MergeConfig(), lake)
    assert first.exit_code == 0 and first.commit == 1
    train = ["train", "demand", "--lake", str(lake.root), "--config", str(config)]
    code, out = run(train, capsys)
    assert code == 0, out

    for table in FACT_TABLES:  # the late days land and are merged: a new commit, newer snapshots
        for day in late:
            if (aside / table / f"dt={day}").exists():
                shutil.move(aside / table / f"dt={day}", lake.partition_dir("raw", table, day))
    second = merge.main(merge.MergeConfig(), lake)
    assert second.merged == late and second.commit == 2

    code, out = run([*train, "--as-of-commit", "1"], capsys)
    assert code == 0 and "registered quanyu-demand version 2" in out, out
    code, out = run(train, capsys)
    assert code == 0 and "registered quanyu-demand version 3" in out, out

    client = MlflowClient(uri)
    tags = {v: client.get_model_version("quanyu-demand", v).tags for v in ("1", "2", "3")}
    assert tags["1"]["lake_commit"] == tags["2"]["lake_commit"] == "1" and tags["3"]["lake_commit"] == "2"
    snapshots = {v: json.loads(t["lake_snapshots"]) for v, t in tags.items()}
    assert snapshots["1"] == snapshots["2"] == {"demand_daily": lake.tables.history()[0].snapshots["demand_daily"]}
    assert snapshots["3"]["demand_daily"] != snapshots["1"]["demand_daily"]
    assert tags["2"]["lake_last_dt"] == str(late[0] - pd.Timedelta(days=1).to_pytimedelta())

    # the same rows asked of both (the days after their origin): v2 answers exactly as v1
    demand = lake.at(1).read_all("curated", "demand_daily", columns=["store_id", "sku_id"]).to_pandas()
    pairs = demand.drop_duplicates().head(6)
    rows = pd.concat([pairs.assign(dt=str(day)) for day in late[:3]], ignore_index=True)
    mlflow.set_tracking_uri(uri)
    answers = {v: mlflow.pyfunc.load_model(f"models:/quanyu-demand/{v}").predict(rows) for v in ("1", "2")}
    assert answers["1"]["p50"].gt(0).any()
    pd.testing.assert_frame_equal(answers["1"], answers["2"], check_exact=True)
    assert tags["3"]["lake_last_dt"] == str(late[-1])

    code, out = run(["models", "show", "demand"], capsys)
    assert code == 0 and f"data: lake commit 1; snapshots demand_daily {snapshots['1']['demand_daily']}" in out, out
    code, out = run(["data", "commits", "--lake", str(lake.root)], capsys)
    assert code == 0 and "merge: 230 day(s) merged" in out and "merge: 10 day(s) merged" in out, out
    code, out = run([*train, "--as-of-commit", "9"], capsys)
    assert code == 2 and "lake commit 9 does not exist" in out and "Traceback" not in out, out
