"""A family's HTTP app made from the API its package declares (models/api.py), without Ray: what a
fourth family costs in serving, and the rules every app shares (serving/http.py) on a real
uvicorn server."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
import uvicorn
from pydantic import BaseModel, ConfigDict, Field

from jobs.processes import free_port
from models.api import FamilyApi, Invocations, Operation
from models.families import FAMILIES as REGISTRY
from serving import app, families, http, routes

KEY = "stock-key-0123456789"


class LevelQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sku_id: str = Field(min_length=1, max_length=64)


class LevelResponse(BaseModel):
    model_version: str
    sku_id: str
    units: float


def level(served, request: dict) -> tuple[int, dict]:
    if request["sku_id"] not in served.predictor:
        return 404, {"detail": f"unknown SKU {request['sku_id']!r}"}
    return 200, {"model_version": served.version, "sku_id": request["sku_id"], "units": served.predictor[request["sku_id"]]}


API = FamilyApi((Operation("GET", "/level", "level", level, LevelResponse, LevelQuery, (404, 422, 503)),),
                Invocations({"type": "object", "required": ["sku_id"], "properties": {"sku_id": {"type": "string"}}},
                            check=lambda predictor, rows: rows, row_per_row=True))
STOCK = dataclasses.replace(REGISTRY["demand"], name="stock", api_ref=f"{__name__}:API")


class Replica:
    """What FamilyServer does with a route, over a dict for a model."""

    def __init__(self, model: dict) -> None:
        self.served = SimpleNamespace(version="7", predictor=model, pyfunc=None)

    async def answer(self, route, request: dict) -> tuple[int, dict]:
        return route.handler(self.served, request)


@pytest.fixture
def stock(monkeypatch):
    """A fourth family, `stock`, as serving sees one: an entry in the registry whose API (one
    operation, its handler, the row schema of its /invocations) is declared here. Nothing in
    serving changes."""
    monkeypatch.setitem(REGISTRY, "stock", STOCK)


def test_a_fourth_family_is_one_registry_entry_away_from_an_application(stock):
    built = {name: (prefix, application._bound_deployment.name)
             for name, prefix, application in app.applications({"tracking_uri": "sqlite:///x.db", "key_digests": ["d"]})}
    assert built["quanyu-stock"] == ("/v1/stock", "Family-stock")
    assert app.deployment_options({"Family-stock": {"num_replicas": 2}}) == {"Family-stock": {"num_replicas": 2}}
    document = app.openapi_document()
    level_op = document["paths"]["/v1/stock/level"]["get"]
    assert {"401", "404", "422", "503"} <= set(level_op["responses"]) and "400" not in level_op["responses"]
    assert [p["name"] for p in level_op["parameters"]] == ["sku_id"]
    assert document["paths"]["/v1/stock/invocations"]["post"]["summary"] == "Stock Invocations"
    assert "/v1/demand/forecast" in document["paths"]  # the others are still there


def test_serving_s_applications_name_no_family():
    """Which families exist is the registry's business, what they answer their packages': serving
    never names one."""
    serving = Path(__file__).resolve().parents[2] / "serving"
    for module in ("app.py", "http.py", "routes.py", "handlers.py", "schemas.py", "families.py"):
        code = (serving / module).read_text()
        named = [f for f in families.FAMILIES if f'"{f}"' in code or f"'{f}'" in code]
        assert named == [], (module, named)


@pytest.fixture
def served(stock):
    """The stock family's FastAPI app on a real uvicorn server, a dict for a model."""
    http.accept_keys([http.key_digest(KEY)], [])
    routes.serve_from(Replica({"AB-1": 12.5}))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(routes.family_api("stock"), host="127.0.0.1", port=port,
                                           log_level="error", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_the_family_app_answers_with_the_shared_rules(served):
    auth = {"Authorization": f"Bearer {KEY}"}
    ok = requests.get(f"{served}/level", params={"sku_id": "AB-1"}, headers=auth, timeout=10)
    assert ok.status_code == 200 and ok.json() == {"model_version": "7", "sku_id": "AB-1", "units": 12.5}
    unknown = requests.get(f"{served}/level", params={"sku_id": "ZZ"}, headers=auth, timeout=10)
    assert unknown.status_code == 404 and unknown.json() == {"detail": "unknown SKU 'ZZ'"}
    # the shared rules: a key, field-level 422s, the body limit, no document of its own
    wrong = requests.get(f"{served}/level", params={"sku_id": "AB-1"}, headers={"Authorization": "Bearer x"}, timeout=10)
    assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"] == "Bearer"
    extra = requests.get(f"{served}/level", params={"sku_id": "AB-1", "x": "1"}, headers=auth, timeout=10)
    assert extra.status_code == 422 and extra.json()["detail"][0]["loc"] == ["query", "x"]
    big = requests.post(f"{served}/invocations", data=b"{" + b" " * http.MAX_BODY_BYTES + b"}",
                        headers={**auth, "Content-Type": "application/json"}, timeout=10)
    assert big.status_code == 413 and "over 1,000,000 bytes" in big.json()["detail"]
    assert requests.get(f"{served}/openapi.json", timeout=10).status_code == 404
