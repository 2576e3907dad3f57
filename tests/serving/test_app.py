"""The Serve application, running for real on the session's Ray: every endpoint over HTTP, keys,
bad input, a version swap under concurrent requests with zero failures, and a version that fails
to load while the old one keeps serving."""

from __future__ import annotations

import re
import threading
import time

import mlflow
import pandas as pd
import pytest
import requests
from mlflow import MlflowClient

from jobs.serve import RETRY_ON
from models.registry import set_alias
from serving.families import wait_until
from tests.serving.conftest import ADMIN, KEY, haproxy_config
from tests.conftest import listening_addresses
from jobs.processes import free_port as _free_port


AUTH = {"Authorization": f"Bearer {KEY}"}


def post(base: str, path: str, body, key: str | None = KEY, **kwargs) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if isinstance(body, (bytes, str)):
        return requests.post(f"{base}{path}", data=body, headers={**headers, "Content-Type": "application/json"},
                             timeout=30, **kwargs)
    return requests.post(f"{base}{path}", json=body, headers=headers, timeout=30, **kwargs)


def test_health_is_open_and_everything_else_needs_a_key(server):
    base, _, _ = server
    assert requests.get(f"{base}/healthz", timeout=5).json() == {"status": "ok"}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}):
        got = requests.get(f"{base}/v1/models", headers=headers, timeout=5)
        assert got.status_code == 401 and got.json() == {"detail": "missing or invalid API key"}
    assert post(base, "/v1/matching/recommend", {"member_id": "x"}, key="nope").status_code == 401
    assert post(base, "/v1/admin/reload", {}, key=KEY).status_code == 401  # a user key is not an admin key
    assert post(base, "/v1/admin/reload", {}, key=ADMIN).status_code == 200


def test_models_lists_each_family_s_version_and_metrics(server):
    base, _, _ = server
    got = requests.get(f"{base}/v1/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=5).json()
    families = {f["family"]: f for f in got["families"]}
    assert set(families) == {"demand", "matching", "location"}
    assert families["demand"]["alias"] == "champion" and families["demand"]["loaded_at"]
    assert "wrmsse" in families["demand"]["metrics"] and "ndcg_at_10" in families["matching"]["metrics"]
    schema = requests.get(f"{base}/openapi.json", timeout=5)
    assert schema.status_code == 200, schema.text[:3000]
    schema = schema.json()
    assert {"/v1/demand/forecast", "/v1/matching/recommend", "/v1/matching/audience", "/v1/location/recommend",
            "/v1/models", "/healthz", *(f"/v1/{f}/invocations" for f in families)} <= set(schema["paths"])
    # every status the API answers is documented: 401 on every protected operation, and the
    # invocations' 413 (too many rows) and 503 (no loaded version)
    operations = [(path, op) for path, ops in schema["paths"].items() for op in ops.values()]
    assert all("401" in op["responses"] for path, op in operations if path != "/healthz"), \
        [path for path, op in operations if path != "/healthz" and "401" not in op["responses"]]
    assert {"404", "409", "413", "422", "503"} <= set(schema["paths"]["/v1/demand/invocations"]["post"]["responses"])
    # ... and 400 / 413 on every operation that takes a body
    with_body = [(path, op) for path, ops in schema["paths"].items() for method, op in ops.items()
                 if method == "post" and path != "/v1/admin/reload"]
    assert with_body and all({"400", "413"} <= set(op["responses"]) for _, op in with_body)
    # the rules the API enforces are in the schema: one of sku_id / attributes, list_price or
    # price_band of a new product, one input format for invocations, the city's pattern
    parts = schema["components"]["schemas"]
    assert [b["required"] for b in parts["AudienceRequest"]["oneOf"]] == [["sku_id"], ["attributes"]]
    assert [b["required"] for b in parts["NewProduct"]["anyOf"]] == [["list_price"], ["price_band"]]
    for family, required in (("demand", ["store_id", "sku_id", "dt"]), ("matching", ["member_id"]),
                             ("location", ["site_id"])):  # one operation per family, its rows' columns
        body = schema["paths"][f"/v1/{family}/invocations"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert len(body["oneOf"]) == 4 and body["additionalProperties"] is False
        assert body["properties"]["dataframe_records"]["items"]["required"] == required
    (city,) = schema["paths"]["/v1/location/map"]["get"]["parameters"]
    assert city["schema"]["pattern"]
    # and the API does what they say
    not_utf8 = requests.post(f"{base}/v1/matching/recommend", data=b'{"member_id": "\xff\xfe"}', timeout=5,
                             headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert not_utf8.status_code == 400, (not_utf8.status_code, not_utf8.text)
    empty = post(base, "/v1/demand/invocations", {})
    assert empty.status_code == 422 and "exactly one of dataframe_split" in empty.text
    extra = post(base, "/v1/demand/invocations", {"inputs": [], "rows": 1})
    assert extra.status_code == 422 and "unknown field(s) 'rows'" in extra.text
    # the API's page loads Swagger UI from its CDN under a policy: that script, its own inline one
    docs = requests.get(f"{base}/docs", timeout=5)
    assert docs.status_code == 200 and "swagger-ui-bundle.js" in docs.text
    policy = docs.headers["Content-Security-Policy"]
    assert policy.startswith("default-src 'none'; script-src https://cdn.jsdelivr.net 'sha256-") and \
        "frame-ancestors 'none'" in policy


def _a_series(uri):
    model = mlflow.pyfunc.load_model("models:/quanyu-demand@champion")
    series = model.unwrap_python_model().forecaster.panel_.series
    return model, series["store_id"].iat[0], series[series["store_id"] == series["store_id"].iat[0]]["sku_id"].head(3).tolist()


def _haproxy_routes(config: str) -> dict[str, list[str]]:
    """HAProxy's routing as Serve wrote it: path prefix → the servers of the backend it uses
    (backups, Serve's fallback proxy, marked with a leading '~')."""
    acl = dict(re.findall(r"acl is_(\S+) path_beg (\S+)", config))
    used = re.findall(r"use_backend (\S+) if is_(\S+)$", config, re.M)
    servers: dict[str, list[str]] = {}
    for block in re.split(r"^backend ", config, flags=re.M)[1:]:
        name, _, body = block.partition("\n")
        servers[name.strip()] = [("~" if " backup" in line else "") + line.split()[1]
                                 for line in body.splitlines() if line.strip().startswith("server ")]
    return {acl[condition]: servers[backend] for backend, condition in used}


def test_each_family_is_one_hop_from_the_port(server, serve_ingress):
    """HAProxy sends /v1/<family>/… straight to the replicas of that family's application (each
    answers HTTP itself), everything else to the root's; Serve's proxy is only a backup."""
    base, _, _ = server
    # Serve rewrites HAProxy's config a moment after a replica starts (it coalesces updates); the
    # fixture's readiness goes through the root's handles, so wait until every replica is listed
    wanted = {"demand": 1, "matching": 1, "location": 3}

    def listed() -> bool:
        routes = _haproxy_routes(haproxy_config(serve_ingress))
        return all(len([s for s in routes.get(f"/v1/{f}/", []) if not s.startswith("~")]) == n
                   for f, n in wanted.items())

    assert wait_until(listed, 60, 0.5), _haproxy_routes(haproxy_config(serve_ingress))
    config = haproxy_config(serve_ingress)
    assert f"retry-on {RETRY_ON}" in config and "option redispatch" in config
    assert "option http-buffer-request" in config  # serving/bin/haproxy's line: POSTs can be retried
    routes = _haproxy_routes(config)
    for family, replicas in wanted.items():
        servers = routes[f"/v1/{family}/"]
        primary = [s for s in servers if not s.startswith("~")]
        assert len(primary) == replicas and all(s.startswith(f"SERVE_REPLICA_quanyu-{family}-Family-{family}")
                                                for s in primary), servers
        assert all(s.startswith("~SERVE_PROXY_ACTOR") for s in servers if s.startswith("~")), servers
    assert all(s.startswith(("SERVE_REPLICA_quanyu-Root", "~")) for s in routes["/"]), routes["/"]
    # and the answers come from there: a family's route, the root's, an unknown family's
    assert requests.get(f"{base}/healthz", timeout=10).json() == {"status": "ok"}
    unknown = requests.post(f"{base}/v1/stock/invocations", json={"instances": [{}]}, headers=AUTH, timeout=10)
    assert unknown.status_code == 404 and "unknown family 'stock'; one of demand, matching, location" in unknown.text


def test_demand_forecast_and_its_errors(server):
    base, uri, _ = server
    _, store, skus = _a_series(uri)
    got = post(base, "/v1/demand/forecast", {"store_id": store, "sku_ids": skus, "horizon_days": 7})
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["model_version"] == "1" and [f["sku_id"] for f in body["forecasts"]] == skus
    for f in body["forecasts"]:
        assert len(f["days"]) == 7 and all(d["p10"] <= d["p50"] <= d["p90"] for d in f["days"])
    cheaper = post(base, "/v1/demand/forecast", {"store_id": store, "sku_ids": skus[:1], "horizon_days": 7,
                                                 "what_if": {"discount": 0.5}}).json()
    assert sum(d["p50"] for d in cheaper["forecasts"][0]["days"]) >= sum(d["p50"] for d in body["forecasts"][0]["days"])
    cases = [({"store_id": "NOPE-1", "sku_ids": skus}, 404, "unknown store_id"),
             ({"store_id": store, "sku_ids": ["XX-000000"]}, 404, "unknown sku_id"),
             ({"store_id": store, "sku_ids": skus, "horizon_days": 29}, 409, "horizon_days must be 1–28, got 29"),
             ({"store_id": store}, 422, "Field required"),
             ({"store_id": store, "sku_ids": skus, "colour": "red"}, 422, "Extra inputs are not permitted"),
             ({"store_id": "../../etc/passwd", "sku_ids": skus}, 422, "should match pattern"),
             ({"store_id": store, "sku_ids": skus, "what_if": {"price": -3}}, 422, "greater than 0")]
    for body_, status, message in cases:
        got = post(base, "/v1/demand/forecast", body_)
        assert got.status_code == status and message in got.text, (body_, got.status_code, got.text)
    nan = post(base, "/v1/demand/forecast", '{"store_id": "%s", "sku_ids": ["%s"], "what_if": {"price": NaN}}' % (store, skus[0]))
    assert nan.status_code == 422 and "finite" in nan.text
    assert post(base, "/v1/demand/forecast", b'{"store_id": ').status_code == 422
    big = post(base, "/v1/demand/forecast", b'{"pad": "' + b"x" * 1_100_000 + b'"}')
    assert big.status_code == 413 and "over 1,000,000 bytes" in big.text


def test_concurrent_forecasts_are_batched_and_each_gets_its_own_answer(server):
    """The demand replica answers forecasts that arrive together in one batch (@serve.batch):
    under 12 concurrent requests, each answer must be the one it gets alone, errors included."""
    from concurrent.futures import ThreadPoolExecutor

    base, uri, _ = server
    _, store, skus = _a_series(uri)
    bodies = [{"store_id": store, "sku_ids": skus[: 1 + i % len(skus)], "horizon_days": 1 + (3 * i) % 28,
               "what_if": {"discount": round(0.05 * (i % 5), 2)}} for i in range(10)]
    bodies += [{"store_id": store, "sku_ids": ["XX-000000"]}, {"store_id": "NOPE-1", "sku_ids": skus}]
    alone = [post(base, "/v1/demand/forecast", b) for b in bodies]
    for _ in range(3):
        with ThreadPoolExecutor(len(bodies)) as pool:
            together = list(pool.map(lambda b: post(base, "/v1/demand/forecast", b), bodies))
        assert [r.status_code for r in together] == [r.status_code for r in alone] == [200] * 10 + [404, 404]
        assert [r.json() for r in together] == [r.json() for r in alone]


def test_matching_recommend_and_audience(server):
    base, _, _ = server
    recommender = mlflow.pyfunc.load_model("models:/quanyu-matching@champion").unwrap_python_model().recommender
    member = recommender.state.members["member_id"].iat[0]
    got = post(base, "/v1/matching/recommend", {"member_id": member, "k": 5, "channel": "online"}).json()
    assert got["model_version"] == "1" and len(got["items"]) == 5
    assert [i["sku_id"] for i in got["items"]] == [i["sku_id"] for i in recommender.recommend(member, 5, "online").items]
    unknown = post(base, "/v1/matching/recommend", {"member_id": "Mnobody", "k": 3}).json()
    assert unknown["fallback"] is True and unknown["fallback_reason"] == "global_popularity"
    assert post(base, "/v1/matching/recommend", {"member_id": member, "k": 0}).status_code == 422
    assert post(base, "/v1/matching/recommend", {"member_id": member, "channel": "fax"}).status_code == 422
    sku = recommender.state.items["sku_id"].iat[0]
    audience = post(base, "/v1/matching/audience", {"sku_id": sku, "k": 10}).json()
    assert len(audience["members"]) == 10 and audience["segments"] and audience["new_product"] is False
    new = post(base, "/v1/matching/audience", {"attributes": {"category": recommender.state.categories[0],
                                                              "price_band": "core"}, "k": 5}).json()
    assert new["new_product"] is True and len(new["members"]) == 5
    assert post(base, "/v1/matching/audience", {"sku_id": "ZZ-1", "k": 5}).status_code == 404
    # a category the catalogue does not have is an unknown name too, not a malformed request
    other = post(base, "/v1/matching/audience", {"attributes": {"category": "spaceships", "list_price": 3}, "k": 5})
    assert other.status_code == 404 and "category must be one of" in other.text
    both = post(base, "/v1/matching/audience", {"sku_id": sku, "attributes": {"category": "x", "list_price": 3}})
    assert both.status_code == 422 and "either sku_id or attributes" in both.text


def test_location_recommend_and_its_errors(server):
    base, _, _ = server
    got = post(base, "/v1/location/recommend", {"city": "Shanghai", "k": 3, "min_distance_km": 0.5})
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["model_version"] == "1" and [p["rank"] for p in body["picks"]] == [1, 2, 3]
    assert body["currency"] == "CNY"  # the tiny lake has no settings.yaml: the default
    assert all(len(p["reasons"]) == 3 for p in body["picks"])
    missing = post(base, "/v1/location/recommend", {"city": "Atlantis", "k": 3})
    assert missing.status_code == 404 and "unknown city" in missing.text
    impossible = post(base, "/v1/location/recommend", {"city": "Shanghai", "k": 3, "max_rent": 0})
    assert impossible.status_code == 409 and "satisfy the constraints" in impossible.text  # valid, beyond its sites
    assert post(base, "/v1/location/recommend", {"city": "Shanghai", "k": 10_000}).status_code == 422
    unknown = post(base, "/v1/location/recommend", {"city": "Shanghai", "k": 2, "include": ["NOT-A-SITE"]})
    assert unknown.status_code == 404 and "not among Shanghai's candidates" in unknown.text


def test_location_cities_and_map_layers(server):
    """What the planner's map draws: every candidate cell of the city with its H3 outline and
    score, and the brand's own stores, from the served version."""
    base, _, _ = server
    auth = {"Authorization": f"Bearer {KEY}"}
    cities = requests.get(f"{base}/v1/location/cities", headers=auth, timeout=10).json()
    assert {c["city"] for c in cities["cities"]} == {"Beijing", "Shanghai"} and cities["data_date"]
    assert all(c["candidates"] > 50 and c["stores"] >= 1 for c in cities["cities"])
    got = requests.get(f"{base}/v1/location/map", params={"city": "Shanghai"}, headers=auth, timeout=10)
    assert got.status_code == 200, got.text
    layers = got.json()
    shanghai = next(c for c in cities["cities"] if c["city"] == "Shanghai")
    assert len(layers["cells"]) == shanghai["candidates"] and len(layers["stores"]) == shanghai["stores"]
    assert "CNY per year" in layers["score"] and layers["currency"] == cities["currency"] == "CNY"
    cell = layers["cells"][0]
    assert len(cell["boundary"]) == 6 and cell["predicted_revenue"] > 0
    # the outline surrounds the centre, a few hundred metres across (H3 resolution 8)
    lats, lons = zip(*cell["boundary"])
    assert min(lats) < cell["lat"] < max(lats) and min(lons) < cell["lon"] < max(lons)
    assert 0.002 < max(lats) - min(lats) < 0.02
    # the picks are cells of this map; the first, with no earlier pick to share customers with,
    # keeps the cell's score
    picks = post(base, "/v1/location/recommend", {"city": "Shanghai", "k": 2}).json()["picks"]
    score = {c["site_id"]: c["predicted_revenue"] for c in layers["cells"]}
    assert {p["site_id"] for p in picks} <= set(score)
    assert abs(score[picks[0]["site_id"]] - picks[0]["predicted_revenue"]) <= 0.001 * score[picks[0]["site_id"]] + 1
    unknown = requests.get(f"{base}/v1/location/map", params={"city": "Atlantis"}, headers=auth, timeout=10)
    assert unknown.status_code == 404 and "unknown city 'Atlantis'" in unknown.json()["detail"]
    for bad in ({}, {"city": ""}, {"city": "x" * 65}):
        assert requests.get(f"{base}/v1/location/map", params=bad, headers=auth, timeout=10).status_code == 422
    assert requests.get(f"{base}/v1/location/map", params={"city": "Shanghai"}, timeout=10).status_code == 401


def test_invocations_answer_what_the_pyfunc_answers(server):
    base, uri, _ = server
    model, store, skus = _a_series(uri)
    origin = model.unwrap_python_model().forecaster.origin_
    rows = pd.DataFrame({"store_id": store, "sku_id": skus, "dt": str(origin + pd.Timedelta(days=1))})
    expected = model.predict(rows)
    got = post(base, "/v1/demand/invocations", {"dataframe_records": rows.to_dict("records")})
    assert got.status_code == 200, got.text
    assert [r["p50"] for r in got.json()["predictions"]] == pytest.approx(expected["p50"].tolist())
    split = post(base, "/v1/demand/invocations", {"dataframe_split": rows.to_dict("split")})
    assert [r["p50"] for r in split.json()["predictions"]] == pytest.approx(expected["p50"].tolist())
    location = mlflow.pyfunc.load_model("models:/quanyu-location@champion")
    site_ids = location.unwrap_python_model().recommender.sites["site_id"].head(3).tolist()
    sites = post(base, "/v1/location/invocations", {"inputs": {"site_id": site_ids}})
    assert [r["predicted_revenue"] for r in sites.json()["predictions"]] == pytest.approx(
        location.predict(pd.DataFrame({"site_id": site_ids}))["predicted_revenue"].tolist())
    assert post(base, "/v1/demand/invocations", {"rows": []}).status_code == 422
    assert post(base, "/v1/demand/invocations", {"dataframe_records": [{"x": 1}]}).status_code == 422
    assert post(base, "/v1/weather/invocations", {"inputs": {}}).status_code == 404


def _demand_invocation_bodies(uri) -> list[dict]:
    model, store, skus = _a_series(uri)
    origin = model.unwrap_python_model().forecaster.origin_
    bodies = [{"dataframe_records": [{"store_id": store, "sku_id": sku, "dt": str(origin + pd.Timedelta(days=1 + (i + j) % 28))}
                                     for j, sku in enumerate(skus[: 1 + i % len(skus)])]} for i in range(8)]
    bodies.append({"dataframe_records": [{"store_id": store, "sku_id": skus[0], "dt": str(origin + pd.Timedelta(days=2)),
                                          "list_price": 59.0, "offer_discount_pct": 0.1}]})  # other columns
    bodies.append({"dataframe_records": [{"x": 1}]})  # rows the model cannot score: 422
    bodies.append({"rows": []})  # not the protocol: 422
    return bodies


def test_invocations_of_a_row_per_row_model_are_scored_together_and_answered_apart(server):
    """Concurrent /invocations to a model that answers row per row are batched (@serve.batch)
    and scored in one predict call; each request must get exactly what it gets alone, its own
    422 included, whatever else was in the batch."""
    from serving import handlers
    from serving.families import FamilyModel

    _, uri, _ = server
    bodies = _demand_invocation_bodies(uri)
    model = FamilyModel("demand", uri)
    assert model.check()
    loaded, calls = model.current, []
    real_predict = loaded.pyfunc.predict
    loaded.pyfunc.predict = lambda rows: calls.append(len(rows)) or real_predict(rows)  # counts, then scores
    alone = [handlers.invocations(loaded, "demand", b) for b in bodies]
    calls.clear()
    together = handlers.invocations_many(loaded, "demand", bodies[:8])
    assert together == alone[:8] and [s for s, _ in together] == [200] * 8
    assert calls == [sum(len(b["dataframe_records"]) for b in bodies[:8])]  # one predict for all eight
    calls.clear()
    # a request with other columns, and bad ones: each answered alone, as it would be alone
    assert handlers.invocations_many(loaded, "demand", bodies) == alone
    assert [s for s, _ in alone[8:]] == [200, 422, 422]
    # a row whose store is null or unknown, among valid ones of the same columns: its own 4xx, checked
    # before the model (the union predict once raised IndexError on it and the batch answered 500)
    row = bodies[0]["dataframe_records"][0]
    hostile = [{"dataframe_records": [{**row, "store_id": None}]}, {"dataframe_records": [{**row, "store_id": "NOPE"}]}]
    calls.clear()
    mixed = handlers.invocations_many(loaded, "demand", [bodies[0], *hostile, bodies[1]])
    assert mixed[0] == alone[0] and mixed[3] == alone[1] and calls == [sum(len(b["dataframe_records"]) for b in bodies[:2])]
    assert mixed[1][0] == 422 and "store_id must be a non-empty id" in mixed[1][1]["detail"]
    assert mixed[2] == (404, {"detail": "unknown store_id(s): 'NOPE'"})


def test_concurrent_invocations_through_serve_get_their_own_answers(server):
    from concurrent.futures import ThreadPoolExecutor

    base, uri, _ = server
    bodies = _demand_invocation_bodies(uri)
    alone = [post(base, "/v1/demand/invocations", b) for b in bodies]
    assert [r.status_code for r in alone] == [200] * 9 + [422, 422]
    for _ in range(3):
        with ThreadPoolExecutor(len(bodies)) as pool:
            together = list(pool.map(lambda b: post(base, "/v1/demand/invocations", b), bodies))
        assert [r.status_code for r in together] == [r.status_code for r in alone]
        assert [r.json() for r in together] == [r.json() for r in alone]


def test_a_new_champion_is_swapped_in_under_load_without_a_failed_request(server):
    base, uri, runs = server
    client = MlflowClient(uri)
    first = client.get_model_version("quanyu-location", "1")  # the same model, registered again
    version = client.create_model_version("quanyu-location", first.source, run_id=first.run_id).version
    failures, versions, stop = [], [], threading.Event()

    def fire():
        while not stop.is_set():
            try:
                got = post(base, "/v1/location/recommend", {"city": "Beijing", "k": 2})
                if got.status_code != 200:
                    failures.append(got.status_code)
                else:
                    versions.append(got.json()["model_version"])
            except requests.RequestException as exc:
                failures.append(repr(exc))

    threads = [threading.Thread(target=fire) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    set_alias("location", version, "champion", client)
    swapped = wait_until(lambda: bool(versions) and versions[-1] == str(version), 60)
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join()
    assert swapped, versions[-5:]
    assert failures == [] and len(versions) > 20
    assert versions[0] == "1" and versions[-1] == str(version)


class Broken(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        raise RuntimeError("this version cannot load: the artifact is corrupt")

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        return model_input


def test_a_version_that_fails_to_load_is_refused_and_the_old_one_keeps_serving(server):
    base, uri, _ = server
    client = MlflowClient(uri)
    serving_now = requests.get(f"{base}/v1/models", headers={"Authorization": f"Bearer {KEY}"},
                               timeout=5).json()["families"]
    before = next(f["version"] for f in serving_now if f["family"] == "matching")
    with mlflow.start_run(experiment_id=client.get_experiment_by_name("quanyu-matching").experiment_id):
        info = mlflow.pyfunc.log_model(name="model", python_model=Broken(), registered_model_name="quanyu-matching")
    set_alias("matching", info.registered_model_version, "champion", client)

    def refused() -> bool:
        got = requests.get(f"{base}/v1/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=5).json()
        matching = next(f for f in got["families"] if f["family"] == "matching")
        return bool(matching["last_error"]) and "refused" in matching["last_error"]

    assert wait_until(refused, 60)
    got = requests.get(f"{base}/v1/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=5).json()
    matching = next(f for f in got["families"] if f["family"] == "matching")
    assert matching["version"] == before and "cannot load" in matching["last_error"]
    member = "Mnobody"
    answer = post(base, "/v1/matching/recommend", {"member_id": member, "k": 2})
    assert answer.status_code == 200 and answer.json()["model_version"] == before
    set_alias("matching", before, "champion", client)  # put it back for any later test


def test_a_version_that_speaks_another_predictor_contract_is_refused_with_the_reason(registry):
    """Serving calls a version's predictor through the contract its pyfunc declares (api_version),
    not by probing for methods: a version that speaks another one (an older or newer Quanyu
    trained it) is refused before it could replace the served version, and says why."""
    from serving.families import FamilyModel

    uri, _ = registry

    def speaks(version):
        def load(model_uri):
            pyfunc = mlflow.pyfunc.load_model(model_uri)
            pyfunc.unwrap_python_model().api_version = version  # what another Quanyu would have registered
            return pyfunc
        return load

    model = FamilyModel("location", uri, loader=speaks(0))
    assert model.check() is False and model.current is None
    assert model.last_error == (f"version {model.champion} refused: its predictor speaks contract 0; this Quanyu "
                                "speaks location contract 1: train the family again to serve it"), model.last_error
    model = FamilyModel("location", uri, loader=speaks(None))
    assert model.check() is False and "no contract (registered before contracts existed)" in model.last_error
    model = FamilyModel("location", uri, loader=speaks(1))
    assert model.check() is True and model.current.version == model.champion and model.last_error is None


def test_quanyu_serve_detach_creates_a_key_answers_and_stops(registry, tmp_path):
    """The CLI end to end in its own process and its own Ray, behind the HAProxy ingress: --detach
    returns once every family answers, HAProxy (not Serve's proxy actor) holds the port, the key
    it created is private to the user, a second start is refused, stop stops it and its HAProxy.
    (The serving fixture covers Serve's own proxy.)"""
    import os
    import stat
    import subprocess
    import sys
    from pathlib import Path

    uri, _ = registry
    home = Path(uri.removeprefix("sqlite:///")).parent
    env = {k: v for k, v in os.environ.items() if k not in ("QUANYU_API_KEYS", "QUANYU_ADMIN_KEYS", "RAY_ADDRESS",
                                                             "MLFLOW_TRACKING_URI")}
    env["QUANYU_HOME"] = str(home)
    quanyu = str(Path(sys.executable).parent / "quanyu")
    port = str(_free_port())
    try:
        started = subprocess.run([quanyu, "serve", "--detach", "--port", port, "--poll-seconds", "2",
                                  "--ingress", "haproxy"], env=env, capture_output=True, text=True, timeout=400)
        assert started.returncode == 0, started.stdout + started.stderr
        config = next((home / "haproxy").resolve().rglob("haproxy.cfg"))  # this server's, not /tmp/haproxy-serve
        assert f":{port}" in config.read_text()
        assert _haproxies(config), "no HAProxy process runs with the server's config"
        assert f"serving at http://127.0.0.1:{port}" in started.stdout and "quanyu-location v" in started.stdout
        key = (home / "api_key").read_text().strip()
        assert stat.S_IMODE((home / "api_key").stat().st_mode) == 0o600 and key in started.stdout
        assert key not in (home / "serve.log").read_text()  # shown to the operator once, never logged
        # no process (the server, Ray's GCS, raylet, workers, replicas) has a key in its environment
        admin = (home / "admin_key").read_text().strip()
        holders = [p.parent.name for p in Path("/proc").glob("[0-9]*/environ") if _environ_holds(p, (key, admin))]
        assert not holders, [Path(f"/proc/{pid}/cmdline").read_bytes()[:80] for pid in holders]
        assert stat.S_IMODE(home.stat().st_mode) == 0o700 and stat.S_IMODE((home / "serve.log").stat().st_mode) == 0o600
        got = requests.get(f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=10)
        assert got.status_code == 200
        assert listening_addresses(int(port)) == {"127.0.0.1"}  # the API on loopback unless told otherwise
        # HAProxy refuses a request head larger than its 16 KB buffer itself
        big = requests.get(f"http://127.0.0.1:{port}/healthz", headers={"X-Big": "a" * 20_000}, timeout=10)
        assert big.status_code in (400, 431), (big.status_code, big.text[:200])
        again = subprocess.run([quanyu, "serve", "--detach", "--port", port], env=env, capture_output=True, text=True,
                               timeout=60)
        assert again.returncode != 0 and "already serving" in again.stderr
    finally:
        stopped = subprocess.run([quanyu, "serve", "stop"], env=env, capture_output=True, text=True, timeout=120)
    assert stopped.returncode == 0 and "stopped the server" in stopped.stdout
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    assert not _haproxies(config), "HAProxy outlived the server"
    assert not (home / "haproxy").exists() and not config.exists()


def _environ_holds(path, secrets: tuple[str, ...]) -> bool:
    try:
        environ = path.read_bytes()
    except OSError:  # gone, or not ours to read
        return False
    return any(secret.encode() in environ for secret in secrets)


def _haproxies(config) -> list[int]:
    """Pids of the HAProxy processes started with `config`."""
    import subprocess

    found = subprocess.run(["pgrep", "-f", f"haproxy .*{config}"], capture_output=True, text=True)
    return [int(p) for p in found.stdout.split()]


def test_the_haproxy_ingress_without_haproxy_says_how_to_get_it(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "QUANYU_HAPROXY_BINARY")}
    env.update(QUANYU_HOME=str(tmp_path), PATH=str(Path(sys.executable).parent))  # no /usr/sbin: no haproxy
    quanyu = str(Path(sys.executable).parent / "quanyu")
    for detach in ([], ["--detach"]):
        done = subprocess.run([quanyu, "serve", "--ingress", "haproxy", *detach], env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 1, done.stdout + done.stderr
        assert "needs the haproxy binary" in done.stderr and "apt-get install haproxy" in done.stderr
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "serve.json").exists()


def test_the_default_ingress_is_haproxy_where_installed_else_the_proxy_with_a_note(monkeypatch):
    from types import SimpleNamespace

    from jobs.serve import resolve_ingress

    local, cluster = SimpleNamespace(ray_address=None), SimpleNamespace(ray_address="10.0.0.1:6379")
    monkeypatch.delenv("QUANYU_HAPROXY_BINARY", raising=False)
    monkeypatch.delenv("RAY_SERVE_ENABLE_HA_PROXY", raising=False)
    assert resolve_ingress("auto", local) == ("haproxy", None)  # make test installs it
    assert resolve_ingress("proxy", local) == ("proxy", None)
    monkeypatch.setenv("PATH", "/nowhere")
    ingress, note = resolve_ingress("auto", local)
    assert ingress == "proxy" and "apt-get install haproxy" in note
    ingress, note = resolve_ingress("auto", cluster)
    assert ingress == "proxy" and "RAY_SERVE_ENABLE_HA_PROXY=1" in note
    monkeypatch.setenv("RAY_SERVE_ENABLE_HA_PROXY", "1")
    assert resolve_ingress("auto", cluster) == ("haproxy", None)


def test_quanyu_serve_applies_thedeployment_options_of_serve_yaml():
    from jobs.serve import serve_config
    from serving.app import deployment_options

    config = serve_config()
    options = deployment_options(config["deployments"])
    assert options["Family-demand"]["autoscaling_config"]["max_replicas"] >= 1
    assert options["Root"]["max_ongoing_requests"] == 64
    assert config["env_vars"]["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
    with pytest.raises(ValueError, match="no deployment named 'Family-stock'"):
        deployment_options({"Family-stock": {}})
    with pytest.raises(ValueError, match="does not apply: max_replicas"):
        deployment_options({"Root": {"max_replicas": 3}})


def _exported(port: int) -> dict[tuple[str, str, str], float]:
    """Quanyu's series in the node's Prometheus export: (metric, endpoint, status) → value, and
    Serve's batch sizes as (metric, deployment, batched method) → value."""
    import re

    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    out: dict[tuple[str, str, str], float] = {}
    for line in text.splitlines():
        match = re.match(r"^(ray_quanyu_\w+|ray_serve_actual_batch_size_\w+)\{(.*)\} ([0-9.e+-]+)$", line)
        if match:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2)))
            key = (match.group(1), labels.get("endpoint", labels.get("deployment", "")),
                   labels.get("status", labels.get("le", labels.get("function_name", ""))))
            out[key] = out.get(key, 0.0) + float(match.group(3))
    return out


def test_per_endpoint_latency_and_status_counts_are_exported(server):
    """quanyu_request_latency_ms (histogram) and quanyu_requests_total (by status) per endpoint,
    scraped from the node's metrics export port as Prometheus would; and Serve's batch sizes of
    the demand replica, which show forecasts answered several at a time."""
    from concurrent.futures import ThreadPoolExecutor

    import ray

    base, uri, _ = server
    _, store, skus = _a_series(uri)
    for _ in range(3):
        assert post(base, "/v1/demand/forecast", {"store_id": store, "sku_ids": skus[:1], "horizon_days": 2}).status_code == 200
    burst = [{"store_id": store, "sku_ids": skus, "horizon_days": 28}] * 16
    for _ in range(3):
        with ThreadPoolExecutor(16) as pool:
            assert {r.status_code for r in pool.map(lambda b: post(base, "/v1/demand/forecast", b), burst)} == {200}
    assert post(base, "/v1/matching/recommend", {"member_id": "Mnobody", "k": 0}).status_code == 422
    port = next(n["MetricsExportPort"] for n in ray.nodes() if n["Alive"])
    seen: dict = {}

    def exported() -> bool:
        seen.clear()
        seen.update(_exported(port))
        counts = {k: v for k, v in seen.items() if k[0].startswith("ray_quanyu_requests_total")}
        batches = {k[0].rsplit("_", 1)[1]: v for k, v in seen.items()
                   if k[0] in ("ray_serve_actual_batch_size_sum", "ray_serve_actual_batch_size_count")
                   and k[1] == "Family-demand" and k[2].endswith("batched")}
        return (any(k[1] == "/v1/demand/forecast" and k[2] == "200" and v >= 3 for k, v in counts.items())
                and any(k[1] == "/v1/matching/recommend" and k[2] == "422" for k in counts)
                # more requests than batches: some batch held several forecasts
                and batches.get("sum", 0) > batches.get("count", 0) > 0)

    assert wait_until(exported, 90, 2.0), sorted(seen)[:20]
    latency = {k: v for k, v in seen.items() if k[0] == "ray_quanyu_request_latency_ms_bucket"
               and k[1] == "/v1/demand/forecast"}
    assert latency and latency[max(latency, key=lambda k: float(k[2]) if k[2] != "+Inf" else 1e99)] >= 3, latency


@pytest.mark.heavy
def test_serve_detach_that_gives_up_stops_its_server_and_says_why(tmp_path):
    """A champion whose files are gone: its replicas never hold it (and fail Serve's health check).
    `quanyu serve --detach` gives up once the family has failed to load for
    QUANYU_SERVE_FAILING_GIVE_UP_S on end (not after the whole ready timeout), writes why to serve.log,
    stops the server it started (the port is free again) and exits 1 naming the family."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    home = tmp_path / "home"
    home.mkdir()
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    client.create_registered_model("quanyu-location")
    version = client.create_model_version("quanyu-location", str(tmp_path / "gone"), run_id=None).version
    client.set_registered_model_alias("quanyu-location", "champion", version)
    env = {k: v for k, v in os.environ.items() if k not in ("QUANYU_API_KEYS", "QUANYU_ADMIN_KEYS", "RAY_ADDRESS",
                                                             "MLFLOW_TRACKING_URI")}
    # keys the operator gives: handed to the server in a private file it deletes, not in its environment
    # a family failing to load for 3 s on end is given up on, whatever is left of the ready timeout
    env.update(QUANYU_HOME=str(home), QUANYU_SERVE_READY_TIMEOUT_S="240", QUANYU_SERVE_FAILING_GIVE_UP_S="3",
               QUANYU_API_KEYS="operator-key-1", QUANYU_ADMIN_KEYS="operator-admin-1")
    quanyu = str(Path(sys.executable).parent / "quanyu")
    port = str(_free_port())
    done = subprocess.run([quanyu, "serve", "--detach", "--port", port, "--poll-seconds", "2"], env=env,
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "location (" in done.stderr and "The server was stopped" in done.stderr and "Traceback" not in done.stderr
    assert "after failing to load for 3 s" in done.stderr
    log = (home / "serve.log").read_text()
    assert "quanyu serve --detach gave up" in log and "location (" in log and "logs/serve/" in log
    assert not (home / "serve.json").exists() and not list(home.glob(".keys-*"))  # the server took its keys
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
