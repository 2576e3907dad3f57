"""A local cluster that grows and shrinks: Ray's autoscaler with the fake multi-node provider
(configs/cluster/local.yaml). `up` starts a head with no CPUs of its own plus the autoscaler, so
the first task that needs a CPU makes the autoscaler start a worker node; idle workers are stopped
after the config's idle timeout. `down` stops the head and every node it started.

This is how a developer watches the daily retrain scale on a laptop; on a cloud the same
autoscaler runs with a real provider (configs/cluster/aws.yaml) and on Kubernetes KubeRay does
the scaling (configs/kuberay/).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

from jobs.processes import alive, free_port
from jobs.runtime import CLUSTER_STATE, auth_env, cluster_state, private_token



def _ray() -> str:
    found = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    if not found:
        raise RuntimeError("the `ray` command is not installed in this environment")
    return found


def up(config_path: Path, home: Path, port: int | None = None, timeout: float = 60.0) -> dict:
    """Start the head and the autoscaler; returns {"address", "pid", "log"} once the head answers."""
    import ray._private.services as services

    previous = cluster_state(home)
    if previous and alive(previous.get("pid")):
        raise RuntimeError(f"a local cluster is already up at {previous['address']} (pid {previous['pid']}); "
                           "quanyu cluster down first")
    folder = home / "cluster"
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    address = f"{services.get_node_ip_address()}:{port}"
    config = yaml.safe_load(Path(config_path).read_text())
    if config.get("provider", {}).get("type") != "fake_multinode":
        raise ValueError(f"{config_path}: `quanyu cluster up` runs the fake multi-node provider only; a cloud "
                         "config starts with `ray up` (docs/cluster.md)")
    # every fake node shares this machine's IP: the autoscaler tells them apart by node id, and
    # the head must carry the id the provider knows it by
    from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID

    config["provider"].update(gcs_address=address, use_node_id_as_ip=True)
    resolved = folder / "autoscaler.yaml"
    resolved.write_text(yaml.safe_dump(config))
    log = open(folder / "ray.log", "ab")
    # token authentication on, explicitly: every client needs the token (`auth_env`)
    token = private_token(folder / "auth_token")  # this cluster's own token
    env = {**os.environ, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN_PATH": str(token),
           "RAY_OVERRIDE_NODE_ID_FOR_TESTING": FAKE_HEAD_NODE_ID}
    for name in ("RAY_ADDRESS", "RAY_AUTH_TOKEN"):
        env.pop(name, None)
    # jobs run `python -m jobs.cli …`: this environment's python, with the project's dependencies
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    dashboard_port = free_port()
    # the dashboard serves the Jobs API (quanyu jobs submit); it listens on loopback only
    command = [_ray(), "start", "--head", f"--port={port}", "--num-cpus=0", "--include-dashboard=true",
               "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
               # the job agent's own port: the default (52365) may belong to another Ray on this machine
               f"--dashboard-agent-listen-port={free_port()}",
               f"--autoscaling-config={resolved}", "--block"]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    info = {"address": address, "jobs": f"http://127.0.0.1:{dashboard_port}", "pid": process.pid,
            "log": str(folder / "ray.log")}
    (folder / CLUSTER_STATE).write_text(json.dumps(info))
    deadline = time.monotonic() + timeout
    host, _, p = address.rpartition(":")
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the head stopped while starting (exit {process.returncode}); see {info['log']}")
        try:
            with socket.create_connection((host, int(p)), timeout=1), \
                    socket.create_connection(("127.0.0.1", dashboard_port), timeout=1):
                return info
        except OSError:
            time.sleep(0.5)
    down(home)
    raise TimeoutError(f"the head did not answer within {timeout:.0f} s; see {info['log']}")


def nodes(address: str, home: Path) -> list[dict]:
    """The cluster's nodes now (alive ones), asked from a separate process so that this one
    stays free to join other clusters."""
    code = ("import json, ray; ray.init(address=%r, logging_level='ERROR', log_to_driver=False); "
            "print(json.dumps([{'id': n['NodeID'], 'cpus': n['Resources'].get('CPU', 0), 'head': "
            "n['Resources'].get('CPU', 0) == 0} for n in ray.nodes() if n['Alive']]))" % address)
    env = {**{k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")},
           **auth_env(home, address)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    if out.returncode:
        raise RuntimeError(f"cannot reach the cluster at {address}: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def down(home: Path, grace: float = 3.0) -> str:
    """Stop the head, its autoscaler and every worker node the autoscaler started."""
    info = cluster_state(home)
    if info is None:
        return f"no local cluster recorded in {home / 'cluster'}"
    pid = info.get("pid")
    # the head's `ray start --block` leads a process group: the GCS, the autoscaler and the
    # raylets the fake provider started are all in it
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        if not alive(pid):
            break
        try:
            os.killpg(pid, sig)
        except OSError:
            break
        deadline = time.monotonic() + wait
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.3)
    try:
        os.killpg(pid, signal.SIGKILL)  # stragglers of the group
    except OSError:
        pass
    (home / "cluster" / CLUSTER_STATE).unlink(missing_ok=True)
    return f"stopped the local cluster at {info['address']}"
