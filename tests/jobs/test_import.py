"""`quanyu data import` end to end (issue 21's bar): one sales-lines CSV of an online-only brand
(integer ids, dates only; no stores, members, promotions, calendar or sites written by hand)
imports, validates, merges, trains demand and matching, and answers a forecast and a
recommendation, with no placeholder rows and no traceback."""

from __future__ import annotations

import datetime as dt
import re

import mlflow
import pandas as pd
import pytest
import yaml

from tests.jobs.test_cli import run
from tests.models.test_demand import FAST as DEMAND_FAST
from tests.models.test_matching import FAST as MATCHING_FAST


@pytest.fixture(scope="module")
def export(tiny_lake, tmp_path_factory):
    """The tiny lake's online lines as one flat CSV a shop system might export: integer order,
    customer and product ids, the date only, the shop's name, column names of its own."""
    lines = tiny_lake.read_all("raw", "online_orders").to_pandas()
    lines = lines[~lines["is_refund"]]
    number = {name: {v: i + 1 for i, v in enumerate(sorted(lines[name].dropna().unique()))}
              for name in ("order_id", "buyer_id", "sku_id")}
    frame = pd.DataFrame({"Order": lines["order_id"].map(number["order_id"]), "Day": lines["dt"].astype(str),
                          "Customer": lines["buyer_id"].map(number["buyer_id"]).astype("Int64"),
                          "Article": lines["sku_id"].map(number["sku_id"]), "Qty": lines["quantity"],
                          "Paid": lines["unit_price"], "Shop": lines["store_id"].str.lower()})
    folder = tmp_path_factory.mktemp("export")
    frame.to_csv(folder / "sales.csv", index=False)
    (folder / "mapping.yaml").write_text(yaml.safe_dump({
        "order_id": "Order", "timestamp": "Day", "customer_id": "Customer", "product_id": "Article",
        "quantity": "Qty", "price": "Paid", "shop": "Shop"}))
    return folder, frame


@pytest.mark.heavy
def test_one_csv_of_an_online_only_brand_trains_demand_and_matching(export, ray_session, tmp_path, monkeypatch,
                                                                      capsys):
    folder, frame = export
    monkeypatch.setenv("QUANYU_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    lake = tmp_path / "lake"
    code, out = run(["data", "import", str(folder / "sales.csv"), "--lake", str(lake), "--mapping",
                     str(folder / "mapping.yaml")], capsys)
    assert code == 0, out
    assert "the export has dates only" in out and "next: quanyu data validate" in out
    # what the lines imply, nothing more: no promotions, calendar, sites; one row per shop, product, customer
    assert sorted(p.name for p in (lake / "raw").iterdir()) == ["identities", "members", "online_orders", "products",
                                                                "stores"]
    stores = pd.read_parquet(lake / "raw" / "stores")
    assert sorted(stores["store_id"]) == sorted(frame["Shop"].unique())
    assert len(pd.read_parquet(lake / "raw" / "members")) == frame["Customer"].nunique()
    assert len(pd.read_parquet(lake / "raw" / "products")) == frame["Article"].nunique()

    code, out = run(["data", "validate", "--lake", str(lake)], capsys)
    assert code == 0, out
    assert "families this lake can train: demand, matching" in out and "location needs raw/candidate_sites" in out
    code, out = run(["data", "merge", "--lake", str(lake)], capsys)
    assert code == 0 and "warning" not in out, out
    assert "channel_id" in out  # the customers' lines were linked to their members

    (tmp_path / "demand.yaml").write_text(yaml.safe_dump(DEMAND_FAST.model_dump(mode="json")))
    (tmp_path / "matching.yaml").write_text(yaml.safe_dump(MATCHING_FAST.model_dump(mode="json")))
    # demand as a backtest: trained on the lake as it was 28 days before its end, forecasts from that
    # day scored on the 28 days that followed, next to the 28-day moving average
    last = max(pd.to_datetime(frame["Day"])).date()
    as_of = str(last - dt.timedelta(days=28))
    for family, extra in (("demand", ["--as-of", as_of]), ("matching", [])):
        code, out = run(["train", family, "--lake", str(lake), "--config", str(tmp_path / f"{family}.yaml"), *extra],
                        capsys)
        assert code == 0 and "Traceback" not in out, out
        assert f"next: quanyu models promote {family} 1" in out
        if family == "demand":
            assert f"origin {as_of}" in out
    code, out = run(["predict", "demand", "--lake", str(lake), "--alias", "candidate", "--as-of", as_of], capsys)
    assert code == 0 and "in-sample" not in out, out
    forecasts = pd.read_parquet(lake / "forecasts" / "demand" / f"dt={as_of}")
    assert forecasts["dt"].nunique() == 28 and str(min(forecasts["dt"]))[:10] > as_of
    backtest = re.search(r"backtest on the lake's 28 day\(s\) after .*: WRMSSE ([\d.]+) \(28-day moving average "
                         r"([\d.]+)\); P10–P90 held (\d+)% of rows, (\d+)% of units", out)
    assert backtest, out
    assert 0 < float(backtest[1]) < 3 and 0 < float(backtest[2]) < 3
    earlier = str(last - dt.timedelta(days=42))
    code, out = run(["predict", "demand", "--lake", str(lake), "--alias", "candidate", "--as-of", earlier], capsys)
    assert code == 0 and f"trained on days up to {as_of}, after {earlier}: these forecasts are in-sample" in out, out
    code, out = run(["predict", "demand", "--lake", str(lake), "--alias", "candidate", "--as-of", "2001-01-01"], capsys)
    assert code == 2 and "no curated demand on or before 2001-01-01" in out and "Traceback" not in out, out
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}")
    forecaster = mlflow.pyfunc.load_model("models:/quanyu-demand@candidate").unwrap_python_model().forecaster
    store, sku = forecaster.panel_.series["store_id"].iat[0], forecaster.panel_.series["sku_id"].iat[0]
    forecast = forecaster.forecast(store, [sku], 7)
    assert len(forecast) == 7 and (forecast["p50"] >= 0).all()
    recommender = mlflow.pyfunc.load_model("models:/quanyu-matching@candidate").unwrap_python_model().recommender
    customer = str(frame["Customer"].dropna().iat[0])
    answer = recommender.recommend(customer, 5)
    assert len(answer.items) == 5 and all(item["sku_id"] in set(frame["Article"].astype(str)) for item in answer.items)


def test_an_export_with_mistakes_is_refused_with_one_line_per_mistake(export, tmp_path, monkeypatch, capsys):
    folder, frame = export
    monkeypatch.setenv("QUANYU_HOME", str(tmp_path / "home"))
    broken = frame.assign(Qty=frame["Qty"].astype(object))
    broken.loc[broken.index[:50], "Qty"] = "n/a"
    broken.loc[broken.index[50:60], "Day"] = "31/02/2025"
    broken.to_csv(tmp_path / "broken.csv", index=False)
    code, out = run(["data", "import", str(tmp_path / "broken.csv"), "--lake", str(tmp_path / "lake"), "--mapping",
                     str(folder / "mapping.yaml")], capsys)
    assert code == 1 and "Traceback" not in out
    problems = [line for line in out.splitlines() if line.startswith("  sales")]
    assert len(problems) == 2, out
    assert any("Qty" in p and "not_a_number" in p and " 50 rows" in p for p in problems)
    assert any("Day" in p and "not_a_time" in p and " 10 rows" in p for p in problems)
    assert not (tmp_path / "lake" / "raw").exists()  # nothing half-written
    code, out = run(["data", "import", str(folder / "sales.csv"), "--lake", str(tmp_path / "lake2"), "--column",
                     "product_id"], capsys)
    assert code == 2 and "write FIELD=COLUMN" in out
