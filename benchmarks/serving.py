"""`quanyu bench serving`: latency and throughput of the two hot endpoints, side by side in one run.

For `/v1/demand/forecast` (one store, 5 SKUs, 28 days) and `/v1/matching/recommend` (one member,
k = 10, online), at concurrency 1 and 16, each for a fixed number of seconds with the closed-loop
load generator (benchmarks/loadgen.py, its own process, loopback only):
- **Quanyu** as `quanyu serve` runs it by default: HAProxy straight to a replica of the family's
  application (one hop), and with `--ingress proxy` (Serve's proxy, then a handle call);
- **a bare FastAPI + uvicorn app** around the same predictors and handlers (no Ray);
- **`mlflow models serve`** of the same registered versions, on its `/invocations` path with the
  equivalent rows;
- and the predictor called in process (the floor: no HTTP at all).
The champions of QUANYU_HOME's registry answer; `make bench` trains and promotes them first.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import requests

from jobs.processes import free_port, start_server, stop_server
from jobs.runtime import Runtime
from models.demand.api import forecast as answer_forecast
from models.matching.api import recommend as answer_recommend
from serving.families import FamilyModel, wait_until

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _load(url: str, body: dict, concurrency: int, seconds: float, auth: str | None) -> dict:
    args = [sys.executable, "-m", "benchmarks.loadgen", url, json.dumps(body), str(concurrency), str(seconds)]
    done = subprocess.run(args + ([auth] if auth else []), capture_output=True, text=True, cwd=REPO,
                          timeout=seconds + 120)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(runtime: Runtime, out: Path, seconds: float = 10.0, concurrencies=(1, 16)) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    uri = runtime.tracking_uri
    models = {f: FamilyModel(f, uri) for f in ("demand", "matching")}
    for family, model in models.items():
        if not model.check():
            raise RuntimeError(f"no champion of quanyu-{family} in {uri}: train and promote one first "
                               f"({model.last_error})")
    forecaster = models["demand"].current.predictor
    series = forecaster.panel_.series
    store = series["store_id"].iat[0]
    skus = series[series["store_id"] == store]["sku_id"].head(5).tolist()
    member_state = models["matching"].current.predictor.state
    member = member_state.members["member_id"].to_numpy()[member_state.has_history(np.arange(len(member_state.members)))][0]
    bodies = {"forecast": {"store_id": store, "sku_ids": skus, "horizon_days": 28},
              "recommend": {"member_id": member, "k": 10, "channel": "online"}}
    days = [str(forecaster.origin_ + dt.timedelta(days=h)) for h in range(1, 29)]
    invocations = {"forecast": {"dataframe_records": [{"store_id": store, "sku_id": s, "dt": d} for s in skus for d in days]},
                   "recommend": {"dataframe_records": [{"member_id": member, "channel": "online", "k": 10}]}}
    paths = {"forecast": "/v1/demand/forecast", "recommend": "/v1/matching/recommend"}
    report: dict = {"seconds_per_run": seconds, "bodies": bodies, "results": []}

    def record(target: str, endpoint: str, concurrency: int, result: dict) -> None:
        row = {"target": target, "endpoint": endpoint, "concurrency": concurrency, **result}
        report["results"].append(row)
        print(json.dumps(row), flush=True)

    # the floor: the handler called in process
    for endpoint, (family, fn) in {"forecast": ("demand", answer_forecast),
                                   "recommend": ("matching", answer_recommend)}.items():
        loaded = models[family].current
        fn(loaded, bodies[endpoint])
        times = []
        deadline = time.perf_counter() + min(seconds, 5)
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            fn(loaded, bodies[endpoint])
            times.append(time.perf_counter() - t0)
        lat = np.array(times) * 1e3
        record("in-process", endpoint, 1, {"requests": len(times), "errors": 0, "rps": round(len(times) / lat.sum() * 1e3, 1),
                                           "p50_ms": round(float(np.percentile(lat, 50)), 2),
                                           "p99_ms": round(float(np.percentile(lat, 99)), 2)})

    base_env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS",)}
    # the servers' own helpers (uvicorn for mlflow models serve) come from this environment
    base_env["PATH"] = f"{BIN}{os.pathsep}{base_env.get('PATH', '')}"
    base_env.update({"QUANYU_HOME": str(runtime.home), "MLFLOW_TRACKING_URI": uri,
                     "QUANYU_API_KEYS": "bench-key", "QUANYU_ADMIN_KEYS": "bench-admin"})
    auth = "Bearer bench-key"

    def serve_target(name: str, extra_env: dict, extra_args: tuple[str, ...] = ()) -> None:
        port = free_port()
        env = {**base_env, **extra_env}
        home = out / name
        home.mkdir(exist_ok=True)
        env["QUANYU_HOME"] = str(home)  # its own serve.json / log; the registry stays the same
        process = start_server([str(BIN / "quanyu"), "serve", "--port", str(port), *extra_args], env,
                         f"http://127.0.0.1:{port}/healthz", out / f"{name}.log", cwd=REPO)
        try:
            def loaded() -> bool:  # an ingress still starting (HAProxy without backends) answers 503 text
                try:
                    got = requests.get(f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": auth}, timeout=5)
                except requests.RequestException:  # HAProxy holds a request while it has no backend
                    return False
                return got.status_code == 200 and got.json()["families"][0]["version"] is not None

            wait_until(loaded, 300, 1.0)
            for endpoint in bodies:
                for c in concurrencies:
                    record(name, endpoint, c, _load(f"http://127.0.0.1:{port}{paths[endpoint]}", bodies[endpoint], c,
                                                    seconds, auth))
        finally:
            stop_server(process, leader_first=True)

    serve_target("quanyu", {})  # `quanyu serve` as it comes: the ingress it picks, configs/serve.yaml's settings
    serve_target("quanyu-proxy", {}, ("--ingress", "proxy"))

    port = free_port()
    process = start_server([sys.executable, "-m", "uvicorn", "benchmarks.peers.bare_fastapi:app", "--host", "127.0.0.1",
                      "--port", str(port), "--log-level", "warning"], base_env, f"http://127.0.0.1:{port}/docs",
                     out / "bare-fastapi.log", cwd=REPO)
    try:
        for endpoint in bodies:
            for c in concurrencies:
                record("bare-fastapi", endpoint, c, _load(f"http://127.0.0.1:{port}{paths[endpoint]}", bodies[endpoint],
                                                          c, seconds, None))
    finally:
        stop_server(process)

    for endpoint, family in (("forecast", "demand"), ("recommend", "matching")):
        port = free_port()
        version = models[family].current.version
        process = start_server([str(BIN / "mlflow"), "models", "serve", "-m", f"models:/quanyu-{family}/{version}",
                          "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)], base_env,
                         f"http://127.0.0.1:{port}/ping", out / f"mlflow-{family}.log", cwd=REPO)
        try:
            for c in concurrencies:
                record("mlflow-models-serve", endpoint, c, _load(f"http://127.0.0.1:{port}/invocations",
                                                                 invocations[endpoint], c, seconds, None))
        finally:
            stop_server(process)

    report["bars"] = bars(report["results"])
    for line in report["bars"]:
        print(json.dumps(line), flush=True)
    (out / "serving.json").write_text(json.dumps(report, indent=1))
    return report


def bars(results: list[dict]) -> list[dict]:
    """Issue 23's bars for the default `quanyu serve`, per endpoint: at concurrency 1 its p50
    against the bare app's (≤ 1.5×) and mlflow models serve's (< 1×); at 16 its requests/s against
    the bare app's (≥ 0.9×) and mlflow's (≥ 1.5×)."""
    at = {(r["target"], r["endpoint"], r["concurrency"]): r for r in results if "error" not in r}
    out = []
    for endpoint in sorted({r["endpoint"] for r in results}):
        def ratio(key: str, target: str, concurrency: int) -> float | None:
            ours, peer = at.get(("quanyu", endpoint, concurrency)), at.get((target, endpoint, concurrency))
            return round(ours[key] / peer[key], 2) if ours and peer and peer[key] else None

        row = {"endpoint": endpoint,
               "p50_c1_vs_bare": ratio("p50_ms", "bare-fastapi", 1),
               "p50_c1_vs_mlflow": ratio("p50_ms", "mlflow-models-serve", 1),
               "rps_c16_vs_bare": ratio("rps", "bare-fastapi", 16),
               "rps_c16_vs_mlflow": ratio("rps", "mlflow-models-serve", 16)}
        checks = [(row["p50_c1_vs_bare"], lambda v: v <= 1.5), (row["p50_c1_vs_mlflow"], lambda v: v < 1.0),
                  (row["rps_c16_vs_bare"], lambda v: v >= 0.9), (row["rps_c16_vs_mlflow"], lambda v: v >= 1.5)]
        row["meets_bars"] = all(v is not None and ok(v) for v, ok in checks)
        out.append(row)
    return out
