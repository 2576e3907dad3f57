"""Where a run's state lives and how it reaches Ray and MLflow. Read at the entry point, once."""

from __future__ import annotations

import json
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

from lake.store import Lake


@dataclass(frozen=True)
class Runtime:
    """Resolved locations: QUANYU_HOME, the lake, the MLflow tracking URI and the Ray address."""

    home: Path
    lake: Lake
    tracking_uri: str
    ray_address: str | None
    artifact_root: str | None = None  # where new experiments keep artifacts; None: the server decides

    @classmethod
    def resolve(cls, lake: str | None = None, ray_address: str | None = None,
                environ: dict[str, str] | None = None) -> "Runtime":
        """Defaults: QUANYU_HOME=./.quanyu, lake under it, MLflow on SQLite under it, a local Ray
        unless --ray-address or RAY_ADDRESS names a cluster."""
        env = os.environ if environ is None else environ
        home = Path(env.get("QUANYU_HOME", ".quanyu")).expanduser().resolve()
        lake_root = lake or home / "lake"  # a folder or a URI (s3://…): lake/location.py
        tracking = env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home / 'mlflow.db'}"
        # a local store (SQLite, files) would otherwise put artifacts in ./mlruns of wherever the
        # command runs; a tracking server chooses its own artifact store
        local_store = tracking.split(":", 1)[0] in ("sqlite", "file") or "://" not in tracking
        return cls(home=home, lake=Lake(lake_root), tracking_uri=tracking,
                   ray_address=ray_address or env.get("RAY_ADDRESS") or None,
                   artifact_root=str(home / "mlartifacts") if local_store else None)


# Ray's session folder holds Unix sockets, whose paths may not exceed 107 bytes; what Ray appends
# ("/session_2026-11-25_16-54-37_374419_12962/sockets/plasma_store") takes 62 of them.
RAY_TEMP_DIR_MAX = 44


def ray_temp_dir(home: Path) -> str | None:
    """Where a local Ray keeps its session files: QUANYU_HOME/ray, unless that path is too long
    for Ray's sockets (then None: Ray's default, /tmp/ray)."""
    folder = home / "ray"
    return str(folder) if len(str(folder)) <= RAY_TEMP_DIR_MAX else None


def private_token(path: Path) -> Path:
    """A Ray authentication token at `path`, created (random, readable by this user only) when
    missing: a cluster of Quanyu's own gets its own token, not the user's ~/.ray/auth_token."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_hex(32))
    return path


def executor():
    """Where the families' work goes from a job: the connected Ray cluster (ensure_ray first), or
    this process when the caller has none (a job called from a notebook)."""
    import ray

    from models.executor import Local, OnRay

    return OnRay() if ray.is_initialized() else Local()


CLUSTER_STATE = "cluster.json"  # QUANYU_HOME/cluster/: what `quanyu cluster up` started


def cluster_state(home: Path) -> dict | None:
    """The local cluster `quanyu cluster up` started from this QUANYU_HOME (its address, Jobs URL,
    pid), or None."""
    path = home / "cluster" / CLUSTER_STATE
    return json.loads(path.read_text()) if path.exists() else None


def auth_env(home: Path, address: str | None) -> dict[str, str]:
    """What a client of the local cluster at `address` needs in its environment (token auth)."""
    info = cluster_state(home)
    if not (info and address and address in (info["address"], info.get("jobs"))):
        return {}
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(home / "cluster" / "auth_token")}


def _token_auth_on(token: Path) -> None:
    """Token authentication on, explicitly, for the local Ray this process starts (and its
    children): Ray would turn it on anyway and say so on every command; chosen here, it is
    silent and the token is QUANYU_HOME's own. A mode the user set (RAY_AUTH_MODE) stands."""
    if os.environ.get("RAY_AUTH_MODE") not in (None, "token"):
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    if not os.environ.get("RAY_AUTH_TOKEN"):
        os.environ.setdefault("RAY_AUTH_TOKEN_PATH", str(private_token(token)))
    from ray._raylet import Config

    Config.initialize("")  # Ray reads its mode once per process: read it again (as ray.init's own default does)


def ensure_ray(runtime: Runtime, *, num_cpus: int | None = None) -> None:
    """Connect to the configured Ray cluster, or start a local one (session files under
    QUANYU_HOME/ray); reuse one already running in this process (tests, notebooks)."""
    import ray

    if ray.is_initialized():
        return
    if runtime.ray_address:
        os.environ.update(auth_env(runtime.home, runtime.ray_address))  # `quanyu cluster up`'s token
        ray.init(address=runtime.ray_address, log_to_driver=True)
        return
    _token_auth_on(runtime.home / "ray_auth_token")
    temp_dir = ray_temp_dir(runtime.home)
    if temp_dir is None:
        print(f"note: Ray's session files go to /tmp/ray: {runtime.home / 'ray'} is longer than "
              f"{RAY_TEMP_DIR_MAX} characters, too long for Ray's sockets", file=sys.stderr)
    # address="local": always a Ray of our own, never one a `ray start` on this machine left running
    start_local_ray(num_cpus=num_cpus, include_dashboard=False, log_to_driver=True, configure_logging=True,
                    logging_level="WARNING", _temp_dir=temp_dir)


LOCAL_RAY_ATTEMPTS = 3
"""How many times a local Ray gets to start. Ray gives its raylet 30 s to register (a constant in
ray/_private/node.py, not a setting); on a busy machine it sometimes needs longer, and the next
try, with the machine's caches warm, usually makes it."""


class RayStartError(RuntimeError):
    """The local Ray did not start; the message says what to do."""


def start_local_ray(**init_args) -> None:
    """ray.init(address="local", **init_args), tried LOCAL_RAY_ATTEMPTS times when the node times
    out during start-up; then RayStartError saying what to do. Other errors pass through."""
    import ray

    for attempt in range(1, LOCAL_RAY_ATTEMPTS + 1):
        try:
            ray.init(address="local", **init_args)
            return
        except Exception as exc:  # Ray raises a bare Exception for this one
            if "timed out during startup" not in str(exc):
                raise
            ray.shutdown()
            if attempt < LOCAL_RAY_ATTEMPTS:
                print(f"note: the local Ray did not start within Ray's 30 s (try {attempt} of "
                      f"{LOCAL_RAY_ATTEMPTS}; the machine is busy); starting it again", file=sys.stderr)
    raise RayStartError(
        f"the local Ray did not start in {LOCAL_RAY_ATTEMPTS} tries (its raylet never registered within 30 s): "
        "the machine is too busy or short of memory. Free some CPU or memory and run the command again, or "
        "start Ray yourself (ray start --head) and pass its address with --ray-address")


def quiet_data_context() -> None:
    """Ray Data in a command: no execution plan and per-operator progress lines on the terminal
    (the command says what it does; Ray Data's own log under the session folder keeps them)."""
    import logging

    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    for name in ("ray.data", "ray.data._internal.execution.streaming_executor"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "Progress bars disabled": we know
    # "the Dataset job will hang unless more CPUs are freed up": Ray Data's guess when an actor
    # pool holds CPUs at the moment it looks; Quanyu's pools leave a CPU free for their feeders
    logging.getLogger("ray.data.dataset").setLevel(logging.ERROR)
