"""The proof of the family contract: a fourth family, `stock` (tests/families/stock/: its family,
training, pyfunc and API, a trivial model over curated demand_daily), joins the registry through
one entry of QUANYU_FAMILIES and gets what the three families of the repository get —
`quanyu train stock`, the daily retrain with its gate, its endpoint served at /v1/stock and
`quanyu models` — with no file outside its package changed."""

from __future__ import annotations


import pytest
import requests
from mlflow import MlflowClient

from lake.store import Lake
from models.families import FAMILIES, PLUGINS, plugins
from serving.families import wait_until
from tests.conftest import copy_lake

REF = "tests.families.stock.family:FAMILY"
KEY = "stock-key-0123456789"


@pytest.fixture
def stock(monkeypatch):
    """The registry as a process started with QUANYU_FAMILIES=REF has it (models/families.py adds
    the plugins at import): this process imported it before, so the entry is added here, by the
    same loader."""
    monkeypatch.setenv(PLUGINS, REF)
    for found in plugins():
        monkeypatch.setitem(FAMILIES, found.name, found)
    return FAMILIES["stock"]


@pytest.fixture
def home(tiny_lake, tmp_path, monkeypatch):
    """QUANYU_HOME with a copy of the merged tiny lake."""
    copy_lake(tiny_lake, tmp_path / "lake")
    monkeypatch.setenv("QUANYU_HOME", str(tmp_path))
    for name in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def quanyu(capsys, *args: str) -> tuple[int, str]:
    from jobs.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(list(args))
    out = capsys.readouterr()
    return done.value.code, out.out + out.err


def test_a_plugin_family_is_refused_with_a_message_when_it_cannot_be_imported():
    with pytest.raises(ValueError, match="cannot import the family 'tests.families.nope:FAMILY'"):
        plugins("tests.families.nope:FAMILY")
    with pytest.raises(ValueError, match="is a FamilyApi, not a models.family.Family"):
        plugins("tests.families.stock.api:API")


def test_a_fourth_family_trains_retrains_with_its_gate_serves_and_is_listed(stock, home, ray_session, capsys):
    from jobs import retrain
    from jobs.retrain import RetrainConfig

    uri = f"sqlite:///{home / 'mlflow.db'}"
    lake = Lake(home / "lake")

    # training: `quanyu train stock`, a command the CLI makes from the registry
    code, out = quanyu(capsys, "train", "stock")
    assert code in (0, None) and "registered quanyu-stock version 1 (alias candidate)" in out, out
    assert "mae_zero" in out

    # the daily retrain with the family's own gate (configs/retrain.yaml names none for it): the
    # level beats forecasting zero, so version 2 is promoted; its task ran in a Ray worker, which
    # knew the family through QUANYU_FAMILIES in its runtime environment
    config = RetrainConfig(families=["stock"])
    assert config.gates["stock"] == stock.gate
    result = retrain.main(config, lake, uri, home, families=["stock"], artifact_root=str(home / "mlartifacts"))
    outcome = result.families["stock"]
    assert result.exit_code == 0 and outcome.status == "promoted", (result.message, outcome)
    assert outcome.metrics["mae"] < outcome.metrics["mae_zero"]
    client = MlflowClient(uri)
    assert str(client.get_model_version_by_alias("quanyu-stock", "champion").version) == outcome.version == "2"

    # `quanyu models`: listed beside the others, its versions with their gate verdicts
    code, out = quanyu(capsys, "models", "list")
    assert code in (0, None) and any(line.split()[:3] == ["stock", "v2", "v2"] for line in out.splitlines()), out
    code, out = quanyu(capsys, "models", "show", "stock")
    newest = out.splitlines()[0].split()
    assert code in (0, None) and newest[:3] == ["v2", "champion,candidate", "mae"] and "gate:" in out, out

    # serving: the family's Serve application at /v1/stock, its operation and /invocations
    _served(stock, uri, home)


def _served(stock, uri: str, home) -> None:
    from ray import serve

    from jobs.processes import free_port
    from serving import app, http

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(app.build_family({"family": "stock", "tracking_uri": uri, "poll_seconds": 1,
                                    "key_digests": [http.key_digest(KEY)]}),
                  name="quanyu-stock", route_prefix="/v1/stock")
        base, auth = f"http://127.0.0.1:{port}/v1/stock", {"Authorization": f"Bearer {KEY}"}
        answers: list = []

        def level() -> bool:
            try:
                answers[:] = [requests.get(f"{base}/level", params={"sku_id": sku}, headers=auth, timeout=10)]
            except requests.RequestException:
                return False
            return answers[0].status_code == 200

        sku, units = _a_level(uri)
        assert wait_until(level, 120, 1.0), answers and answers[0].text
        assert answers[0].json() == {"model_version": "2", "origin": answers[0].json()["origin"], "sku_id": sku,
                                     "units": pytest.approx(units)}
        body = answers[0].json()
        unknown = requests.get(f"{base}/level", params={"sku_id": "NOPE"}, headers=auth, timeout=10)
        assert unknown.status_code == 404 and unknown.json() == {"detail": "unknown SKU 'NOPE'"}
        rows = requests.post(f"{base}/invocations", json={"dataframe_records": [{"sku_id": sku}]}, headers=auth,
                             timeout=10)
        assert rows.status_code == 200 and rows.json()["predictions"] == [{"units": body["units"]}], rows.text
        assert requests.get(f"{base}/level", params={"sku_id": sku}, timeout=10).status_code == 401
    finally:
        serve.delete("quanyu-stock")
        serve.shutdown()


def _a_level(uri: str) -> tuple[str, float]:
    """A SKU and its level, as the champion holds them."""
    from models.registry import load_version

    return next(iter(load_version("stock", uri, alias="champion").predictor.units.items()))


def test_nothing_outside_its_package_names_the_fourth_family():
    """What the fourth family cost: its package and the QUANYU_FAMILIES entry. No part of the
    platform (code, configs, the Serve and KubeRay files) names it."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    family = re.compile(r"\bstock\b(?!-keeping)")  # not "stock-keeping unit", not StockCode
    named = [str(p.relative_to(root)) for folder in ("lake", "models", "jobs", "serving", "benchmarks", "configs")
             for p in (root / folder).rglob("*") if p.suffix in (".py", ".yaml", ".yml", ".toml")
             and family.search(p.read_text().lower())]
    assert named == []
