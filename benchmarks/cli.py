"""`quanyu bench cli`: how long the registry commands take from the shell, against the floor of
any Python command that asks MLflow the same thing.

Each command runs `repeats` times as its own process (what a user types), on the registry of
QUANYU_HOME as it is (train the families first). The peer is a fresh `python -c` that imports
MLflow and reads the same alias with MlflowClient: what no Python tool around this registry can
beat. The figures are the median wall time and its ratio to that floor; the bar is < 3 s.
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

from jobs.runtime import Runtime

BAR_SECONDS = 3.0


def _wall(command: list[str], env: dict[str, str]) -> float:
    started = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()[-300:]}")
    return seconds


def _champion_or_candidate(runtime: Runtime, family: str) -> tuple[str, str] | None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(runtime.tracking_uri)
    for alias in ("champion", "candidate"):
        try:
            return alias, str(client.get_model_version_by_alias(f"quanyu-{family}", alias).version)
        except MlflowException:
            continue
    return None


def main(runtime: Runtime, out: Path, repeats: int = 5) -> dict:
    quanyu = shutil.which("quanyu") or str(Path(sys.executable).with_name("quanyu"))
    env = {**os.environ, "QUANYU_HOME": str(runtime.home)}
    registered = {f: v for f in ("demand", "matching", "location") if (v := _champion_or_candidate(runtime, f))}
    if not registered:
        raise RuntimeError(f"no registered version in {runtime.tracking_uri}: train a family first "
                           "(quanyu train demand), then run the benchmark")
    family, (alias, version) = next(iter(registered.items()))
    floor = ("from mlflow import MlflowClient; "
             f"MlflowClient({runtime.tracking_uri!r}).get_model_version_by_alias('quanyu-{family}', {alias!r})")
    commands = {
        "python -c: MlflowClient reads an alias (the floor)": [sys.executable, "-c", floor],
        "quanyu models list": [quanyu, "models", "list"],
        f"quanyu models show {family}": [quanyu, "models", "show", family],
        f"quanyu models promote {family} {version}": [quanyu, "models", "promote", family, version],
    }
    rows = []
    for name, command in commands.items():
        _wall(command, env)  # warm the file cache once, as a user's second command finds it
        times = [_wall(command, env) for _ in range(repeats)]
        rows.append({"command": name, "median_s": round(statistics.median(times), 2),
                     "max_s": round(max(times), 2), "runs": repeats})
        print(f"bench cli: {name}: median {rows[-1]['median_s']} s", file=sys.stderr, flush=True)
    floor_s = rows[0]["median_s"]
    for row in rows:
        row["vs_floor"] = round(row["median_s"] / floor_s, 2)
    report = {"registry": runtime.tracking_uri, "families": sorted(registered), "bar_s": BAR_SECONDS, "rows": rows,
              "meets_bar": all(r["median_s"] < BAR_SECONDS for r in rows[1:])}
    out.mkdir(parents=True, exist_ok=True)
    (out / "cli.json").write_text(json.dumps(report, indent=1))
    print(f"{'command':<52} {'median':>8} {'max':>7} {'× floor':>8}")
    for r in rows:
        print(f"{r['command']:<52} {r['median_s']:>7.2f}s {r['max_s']:>6.2f}s {r['vs_floor']:>8.2f}")
    print(f"bar: every quanyu command under {BAR_SECONDS:.0f} s: {'met' if report['meets_bar'] else 'NOT met'}")
    return report
