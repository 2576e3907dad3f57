"""`quanyu bench fuzz`: the long property-based run of the whole API (issue 19's bar), too long for
`make test`, which runs a bounded version (tests/serving/test_reliability.py).

Against a `quanyu serve` started on this home's champions (its default ingress, or the one named), schemathesis
runs every phase — examples, coverage (boundary values of every parameter and rule), fuzzing, and
stateful sequences built from the schema's links — in `--mode all` (valid requests and requests
that break one value, type or documented rule) with every check it has: no 5xx, statuses,
content types, headers and bodies inside the schema, invalid data refused, valid data accepted,
a request without the key refused. Its JSON report goes to the work folder; the summary counts
cases, requests by status and failures by check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import requests

from jobs.processes import free_port, start_server, stop_server
from jobs.runtime import Runtime
from serving.families import FamilyModel, wait_until

BIN = Path(sys.executable).parent
PHASES = "examples,coverage,fuzzing,stateful"


def main(runtime: Runtime, out: Path, max_examples: int = 100, ingress: str = "auto", seed: int = 1,
         say=print) -> dict:
    """Serve this home's champions, fuzz them, stop; returns (and writes to out/fuzz.json) the summary."""
    out.mkdir(parents=True, exist_ok=True)
    for family in ("demand", "matching", "location"):
        model = FamilyModel(family, runtime.tracking_uri)
        if not model.check():
            raise RuntimeError(f"no champion of quanyu-{family} in {runtime.tracking_uri}: run quanyu retrain "
                               f"first ({model.last_error})")
    key, port = "fuzz-key", free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update({"QUANYU_HOME": str(out / "home"), "MLFLOW_TRACKING_URI": runtime.tracking_uri,
                "QUANYU_API_KEYS": key, "QUANYU_ADMIN_KEYS": "fuzz-admin-key",
                "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"})
    (out / "home").mkdir(exist_ok=True)
    base = f"http://127.0.0.1:{port}"
    server = start_server([str(BIN / "quanyu"), "serve", "--port", str(port), "--ingress", ingress], env,
                          f"{base}/healthz", out / "serve.log")
    try:
        def loaded() -> bool:
            try:
                got = requests.get(f"{base}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=5)
            except requests.RequestException:
                return False
            return got.status_code == 200 and all(f["version"] for f in got.json()["families"])

        if not wait_until(loaded, 300, 1.0):
            raise RuntimeError(f"the server did not load every champion in 300 s; see {out / 'serve.log'}")
        say(f"fuzzing {base} ({ingress} ingress): phases {PHASES}, up to {max_examples} cases per operation")
        report = out / "schemathesis.json"
        ndjson = out / "schemathesis.ndjson"
        done = subprocess.run(
            [str(BIN / "schemathesis"), "run", f"{base}/openapi.json", "-H", f"Authorization: Bearer {key}",
             "--mode", "all", "--phases", PHASES, "--checks", "all", "-n", str(max_examples), "--seed", str(seed),
             "--generation-database", "none", "--request-timeout", "60", "--workers", "2", "--no-color",
             "--report", "json,ndjson", "--report-json-path", str(report), "--report-ndjson-path", str(ndjson),
             "--suppress-health-check", "all"],
            capture_output=True, text=True, env=env, timeout=3600)
        (out / "schemathesis.log").write_text(done.stdout + done.stderr)
    finally:
        stop_server(server, leader_first=True)
    summary = summarise(ndjson)
    summary.update({"ingress": ingress, "max_examples_per_operation": max_examples, "seed": seed,
                    "exit_code": done.returncode, "report": str(report)})
    (out / "fuzz.json").write_text(json.dumps(summary, indent=1))
    return summary


def summarise(ndjson: Path) -> dict:
    """Cases, responses by status and failures by check, from schemathesis' event stream."""
    statuses: Counter = Counter()
    failures: Counter = Counter()
    cases = 0
    for line in ndjson.read_text().splitlines():
        event = json.loads(line)
        for kind, body in event.items():
            if kind != "ScenarioFinished":
                continue
            for case in (body.get("recorder") or {}).get("cases", {}).values():
                cases += 1
            for interactions in (body.get("recorder") or {}).get("interactions", {}).values():
                response = interactions.get("response") or {}
                if "status_code" in response:
                    statuses[str(response["status_code"])] += 1
            for checks in (body.get("recorder") or {}).get("checks", {}).values():
                for check in checks:
                    if check.get("status") == "failure":
                        failures[check.get("name", "?")] += 1
    server_errors = sum(n for status, n in statuses.items() if status.startswith("5"))
    return {"cases": cases, "responses": sum(statuses.values()), "statuses": dict(sorted(statuses.items())),
            "server_errors": server_errors, "failures_by_check": dict(failures), "failures": sum(failures.values())}
