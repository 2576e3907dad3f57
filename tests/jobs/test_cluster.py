"""The elastic cluster: Ray's autoscaler with the fake multi-node provider (configs/cluster/
local.yaml) adds a worker node when tasks ask for CPUs the head does not have, and removes it
once idle; and the cluster / KubeRay / Serve configs describe the application this project builds."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from jobs import cluster
from jobs.processes import alive
from serving.families import wait_until

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

QUANYU = str(Path(sys.executable).parent / "quanyu")


@pytest.mark.cluster
def test_a_job_submitted_to_the_local_cluster_grows_it_and_it_shrinks_after(raw_copy, tmp_path):
    """`quanyu jobs submit` sends `quanyu data validate` (Ray tasks over the lake's partitions) to a
    head with no CPUs: the autoscaler adds worker nodes for it, the logs stream back, the job's
    exit status is the command's, `jobs status` reports it, and the idle workers go away."""
    home = tmp_path / "home"
    info = cluster.up(CONFIGS / "cluster" / "local.yaml", home)
    env = {**{k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")},
           "QUANYU_HOME": str(home)}
    try:
        workers = lambda: [n for n in cluster.nodes(info["address"], home) if not n["head"]]  # noqa: E731
        assert workers() == [], "the head starts alone, with no CPU of its own"
        asked = time.monotonic()
        day = max(raw_copy.partitions("raw", "pos_transactions"))  # one day: a few tasks, enough to need a node
        job = subprocess.Popen([QUANYU, "jobs", "submit", "--address", info["jobs"], "--", "data", "validate",
                                "--lake", str(raw_copy.root), "--date", str(day)], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        if not wait_until(lambda: len(workers()) >= 1 or job.poll() is not None, 120, 1.0) or not workers():
            job.kill()
            out, err = job.communicate()
            pytest.fail(f"no worker node joined for the job: {out[-1500:]} {err[-1500:]}")
        joined = time.monotonic() - asked
        out, err = job.communicate(timeout=300)
        assert job.returncode == 0, out[-2000:] + err[-2000:]
        assert "submitted raysubmit_" in err and "SUCCEEDED (exit 0)" in err
        assert "partitions" in out  # the command's own output, streamed back
        print(f"request to a worker node joining: {joined:.1f} s")
        # idle_timeout_minutes 0.1: the workers go once the work is done
        assert wait_until(lambda: workers() == [], 120, 2.0), f"workers still up: {workers()}"

        job_id = err.split("submitted ")[1].split(":")[0]
        status = subprocess.run([QUANYU, "jobs", "status", "--address", info["jobs"], job_id], env=env,
                                capture_output=True, text=True, timeout=60)
        assert status.returncode == 0 and "SUCCEEDED" in status.stdout and "data validate" in status.stdout
        unknown = subprocess.run([QUANYU, "jobs", "status", "--address", info["jobs"], "raysubmit_nope"], env=env,
                                 capture_output=True, text=True, timeout=60)
        assert unknown.returncode != 0 and "Traceback" not in unknown.stderr
    finally:
        print(cluster.down(home))
    assert not alive(info["pid"])


def test_cluster_up_refuses_a_cloud_config_with_a_pointer(tmp_path):
    with pytest.raises(ValueError, match="fake multi-node provider only"):
        cluster.up(CONFIGS / "cluster" / "aws.yaml", tmp_path)


def test_the_deployment_configs_name_what_the_application_deploys():
    """serve.yaml and the RayService deploy what `quanyu serve` deploys (serving.app.applications:
    each family's application at its prefix, the root at /) with the deployments those bind, and
    the RayService runs HAProxy with Quanyu's retries; the RayCronJob runs quanyu retrain on a
    cluster it deletes when the job ends."""
    from jobs.serve import RETRY_ON
    from serving.app import applications

    expected = {name: (prefix, application._bound_deployment.name)
                for name, prefix, application in applications({"tracking_uri": "sqlite:///x.db", "key_digests": ["k"]})}
    serve_yaml = yaml.safe_load((CONFIGS / "serve.yaml").read_text())
    service = yaml.safe_load((CONFIGS / "kuberay" / "serve-rayservice.yaml").read_text())
    for config in (serve_yaml, yaml.safe_load(service["spec"]["serveConfigV2"])):
        deployed = {a["name"]: (a["route_prefix"], *[d["name"] for d in a["deployments"]])
                    for a in config["applications"]}
        assert deployed == expected
        for a in config["applications"]:
            family = a["args"].get("family")
            assert a["import_path"] == ("serving.app:build_family" if family else "serving.app:build")
            assert family is None or a["name"] == f"quanyu-{family}"
    for group in (service["spec"]["rayClusterConfig"]["headGroupSpec"],
                  *service["spec"]["rayClusterConfig"]["workerGroupSpecs"]):
        env = {e["name"]: e.get("value") for e in group["template"]["spec"]["containers"][0]["env"]}
        assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1" and env["RAY_SERVE_HAPROXY_RETRY_ON"] == RETRY_ON
        assert env["RAY_SERVE_HAPROXY_BINARY_PATH"].endswith("/serving/bin/haproxy") and env["QUANYU_HAPROXY_BINARY"]
    cron = yaml.safe_load((CONFIGS / "kuberay" / "retrain-raycronjob.yaml").read_text())
    job = cron["spec"]["jobTemplate"]["spec"]
    assert cron["kind"] == "RayCronJob" and job["entrypoint"].startswith("quanyu retrain")
    assert job["shutdownAfterJobFinishes"] is True and cron["spec"]["concurrencyPolicy"] == "Forbid"
    for spec in (job["rayClusterSpec"], service["spec"]["rayClusterConfig"]):
        assert spec["authOptions"] == {"mode": "token"}
        assert spec["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "127.0.0.1"
    local = yaml.safe_load((CONFIGS / "cluster" / "local.yaml").read_text())
    assert local["provider"]["type"] == "fake_multinode" and local["available_node_types"]["cpu.worker"]["min_workers"] == 0
