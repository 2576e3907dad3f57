"""`quanyu bench load`: sustained load across every endpoint while a promotion happens.

`quanyu serve` runs in its own process; the closed-loop load generator (benchmarks/loadgen.py, its
own process, loopback only, fixed concurrency and duration) cycles through forecast, recommend,
audience, site recommendation and invocations. `promote_after` seconds in, every family gets a new
version (its champion's model, registered again) promoted to `champion`, so each deployment loads,
smoke-tests and swaps a version while the load runs. The report counts requests, failed requests
and 5xx, the p99 overall and per endpoint, and how long each family took to serve its new version.
Afterwards the aliases point where they pointed before and the extra versions are deleted: the
registry is left as it was found.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import requests
from mlflow import MlflowClient

from benchmarks.serving import BIN, REPO
from jobs.processes import free_port, start_server, stop_server
from jobs.runtime import Runtime
from models.registry import set_alias
from serving.families import FAMILIES, FamilyModel, wait_until


def _mix(models: dict[str, FamilyModel], base: str) -> list[dict]:
    forecaster = models["demand"].current.predictor
    series = forecaster.panel_.series
    store = series["store_id"].iat[0]
    skus = series[series["store_id"] == store]["sku_id"].head(3).tolist()
    matching = models["matching"].current.predictor.state
    location = models["location"].current.predictor
    city = location.cities[0]
    sites = location.sites["site_id"].head(5).tolist()
    mix = [{"url": f"{base}/v1/demand/forecast", "body": {"store_id": store, "sku_ids": skus, "horizon_days": 28}},
           {"url": f"{base}/v1/matching/recommend", "body": {"member_id": matching.members["member_id"].iat[0], "k": 10}},
           {"url": f"{base}/v1/matching/audience", "body": {"sku_id": matching.items["sku_id"].iat[0], "k": 20}},
           {"url": f"{base}/v1/location/recommend", "body": {"city": city, "k": 3}},
           {"url": f"{base}/v1/location/invocations", "body": {"dataframe_records": [{"site_id": s} for s in sites]}}]
    return mix


def main(runtime: Runtime, out: Path, seconds: float = 60.0, concurrency: int = 32, promote_after: float = 20.0) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    uri = runtime.tracking_uri
    client = MlflowClient(uri)
    models = {f: FamilyModel(f, uri) for f in FAMILIES}
    for family, model in models.items():
        if not model.check():
            raise RuntimeError(f"no champion of quanyu-{family} in {uri}: run `quanyu retrain` first ({model.last_error})")
    champions = {f: m.current.version for f, m in models.items()}

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    auth = "Bearer bench-key"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update({"QUANYU_HOME": str(out), "MLFLOW_TRACKING_URI": uri, "QUANYU_API_KEYS": "bench-key",
                "QUANYU_ADMIN_KEYS": "bench-admin"})
    mix_file = out / "mix.json"
    mix_file.write_text(json.dumps(_mix(models, base)))
    server = start_server([str(BIN / "quanyu"), "serve", "--port", str(port), "--poll-seconds", "1"], env,
                    f"{base}/healthz", out / "serve.log", cwd=REPO)
    added: dict[str, str] = {}
    report: dict = {"date": dt.date.today().isoformat(), "seconds": seconds, "concurrency": concurrency,
                    "promote_after_s": promote_after, "champions_before": champions}
    try:
        def served() -> dict[str, str]:
            got = requests.get(f"{base}/v1/models", headers={"Authorization": auth}, timeout=10).json()
            return {f["family"]: f["version"] for f in got["families"]}

        if not wait_until(lambda: all(served().values()), 300, 1.0):
            raise TimeoutError(f"the server did not load every family; see {out / 'serve.log'}")
        load = subprocess.Popen([sys.executable, "-m", "benchmarks.loadgen", "--mix", str(mix_file), str(concurrency),
                                 str(seconds), auth], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=REPO)
        time.sleep(promote_after)
        promoted_at = time.monotonic()
        for family, version in champions.items():
            source = client.get_model_version(f"quanyu-{family}", version)
            new = client.create_model_version(f"quanyu-{family}", source.source, run_id=source.run_id,
                                              tags={"quanyu.bench": "load: the champion registered again"})
            added[family] = str(new.version)
            set_alias(family, new.version, "champion", client)
        swapped: dict[str, float] = {}

        def all_swapped() -> bool:
            now = served()
            for family, version in added.items():
                if now.get(family) == version and family not in swapped:
                    swapped[family] = round(time.monotonic() - promoted_at, 1)
            return len(swapped) == len(added)

        report["all_swapped"] = wait_until(all_swapped, seconds, 0.5)
        report["swap_seconds"] = swapped
        stdout, stderr = load.communicate(timeout=seconds + 120)
        if load.returncode != 0:
            raise RuntimeError(f"the load generator failed: {stderr.strip()[-500:]}")
        result = json.loads(stdout.strip().splitlines()[-1])
        report.update(result)
        report["server_errors_5xx"] = sum(n for code, n in result.get("statuses", {}).items() if int(code) >= 500)
    finally:
        stop_server(server)
        for family, version in champions.items():
            set_alias(family, version, "champion", client)
        for family, version in added.items():
            client.delete_model_version(f"quanyu-{family}", version)
    (out / "load.json").write_text(json.dumps(report, indent=1))
    print(f"load: {report['requests']:,} requests at concurrency {concurrency} for {seconds:.0f} s, "
          f"{report['errors']} failed, {report['server_errors_5xx']} 5xx, p50 {report['p50_ms']} ms, "
          f"p99 {report['p99_ms']} ms; new versions served after {report['swap_seconds']} s")
    return report
