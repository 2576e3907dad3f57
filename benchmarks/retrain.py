"""`quanyu bench retrain`: what the daily retrain costs beyond the training itself, and how fast the
local autoscaler brings a node.

- the whole retrain on a fresh copy of a lake's raw zone (validate the last day, merge every day,
  train the three families in parallel, gate, promote), its steps, and its wall time as a ratio to
  the sum of the families' own training jobs (what `quanyu train <family>` does for each, one
  after another) — the goal is at most 1.5; below 1 means the parallel families paid for the rest;
- the same retrain again on the same date (the idempotent path: nothing to do);
- under `configs/cluster/local.yaml`: seconds from a job's request to the first worker node joining,
  and to the last one leaving once the job is done (median of `repeats`).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.lake import PeakMemory
from jobs import train
from lake.store import Lake
from models.families import FAMILIES

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def retrain_once(raw: Path, work: Path, say=print) -> dict:
    from jobs import retrain

    if work.exists():
        shutil.rmtree(work)
    lake = Lake(work / "lake")
    shutil.copytree(raw, lake.root / "raw")
    config = retrain.RetrainConfig.from_yaml(CONFIGS / "retrain.yaml")
    uri = f"sqlite:///{work / 'mlflow.db'}"
    with PeakMemory() as memory:
        started = time.monotonic()
        result = retrain.main(config, lake, uri, work, artifact_root=str(work / "mlartifacts"))
        wall = time.monotonic() - started
    say(f"retrain: {wall:.0f} s, exit {result.exit_code}, steps {result.steps}")
    bare, bare_peaks = bare_training(lake, work / "bare", say)
    trained = sum(bare.values())
    again_started = time.monotonic()
    again = retrain.main(config, lake, uri, work, artifact_root=str(work / "mlartifacts"))
    again_wall = time.monotonic() - again_started
    out = {"wall_s": round(wall, 1), "steps_s": result.steps, "exit_code": result.exit_code,
           "families": {f: {"status": o.status, "train_s": o.seconds, "version": o.version}
                        for f, o in result.families.items()},
           "training_jobs_alone_s": bare, "training_jobs_alone_peak_above_start_gb": bare_peaks,
           "footprint_estimate_gb": {f: round(spec.memory.bytes(lake) / 2**30, 2) for f, spec in FAMILIES.items()},
           "sum_of_training_jobs_s": round(trained, 1),
           "ratio_to_training": round(wall / trained, 2) if trained else None,
           "peak_rss_gb": round(memory.peak_bytes / 2**30, 2), "again_wall_s": round(again_wall, 1),
           "again_resumed": again.resumed}
    say(json.dumps(out, indent=1))
    return out


def bare_training(lake: Lake, work: Path, say=print) -> tuple[dict[str, float], dict[str, float]]:
    """Each family's own training job alone, one after another, on the merged lake (the peer):
    seconds, and the peak memory of the process tree above what it held when the job began, in GB
    (idle Ray workers and the retrain's leftovers are not the job's)."""
    seconds, peaks = {}, {}
    for family, spec in FAMILIES.items():
        config, path = spec.config()
        with PeakMemory() as memory:
            started = time.monotonic()
            train.main(family, config, lake, f"sqlite:///{work / 'mlflow.db'}", config_path=path,
                            artifact_root=str(work / "mlartifacts"))
            seconds[family] = round(time.monotonic() - started, 1)
        peaks[family] = round((memory.peak_bytes - memory.start_bytes) / 2**30, 2)
        say(f"bare {family}: {seconds[family]} s, peak {peaks[family]} GB")
    return seconds, peaks


WORK = """
import sys, time, ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
@ray.remote(num_cpus=1)
def work():
    time.sleep(2.0)
    return time.time()
print(min(ray.get([work.remote(), work.remote()])))
"""


def autoscaling(home: Path, repeats: int = 3, say=print) -> dict:
    from jobs import cluster

    joins, leaves = [], []
    for _ in range(repeats):
        info = cluster.up(CONFIGS / "cluster" / "local.yaml", home)
        try:
            env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"},
                   **cluster.auth_env(home, info["address"])}
            asked = time.time()
            done = subprocess.run([sys.executable, "-c", WORK, info["address"]], env=env, capture_output=True,
                                  text=True, timeout=300)
            started = float(done.stdout.strip().splitlines()[-1])
            joins.append(started - asked)
            finished = time.monotonic()
            while [n for n in cluster.nodes(info["address"], home) if not n["head"]]:
                time.sleep(1.0)
            leaves.append(time.monotonic() - finished)
        finally:
            cluster.down(home)
    out = {"request_to_first_task_on_a_new_node_s": round(statistics.median(joins), 1),
           "job_end_to_last_worker_gone_s": round(statistics.median(leaves), 1), "repeats": repeats,
           "idle_timeout_s": 6}
    say(json.dumps(out, indent=1))
    return out


def main(lake: Lake, work: Path, repeats: int = 3) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    results = {"lake": str(lake.root), "retrain": retrain_once(lake.root / "raw", work / "retrain"),
               "autoscaling": autoscaling(work / "cluster", repeats)}
    (work / "results.json").write_text(json.dumps(results, indent=1))
    return results
