"""Shared fixtures: one local Ray per test session, one tiny lake generated and merged once,
and cheap copies of its raw zone for tests that corrupt or change data."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.processes import free_port
from jobs.runtime import start_local_ray
from lake.store import Lake

TINY_SEED = 7


@pytest.fixture(scope="session")
def serve_ingress(tmp_path_factory):
    """The environment `quanyu serve` gives its own local Ray by default, for the session's Ray:
    HAProxy as Serve's ingress (serving/app.py), its files in a folder of its own (removed at the
    end), and Serve's short draining."""
    from jobs.serve import LOCAL_DRAINING, remove_haproxy_files, haproxy_env

    home = tmp_path_factory.mktemp("serve-home")
    yield {**haproxy_env(home, shutil.which("haproxy") or "/usr/sbin/haproxy"), **LOCAL_DRAINING}
    remove_haproxy_files(home)


@pytest.fixture(scope="session")
def ray_session(serve_ingress):
    """The session's local Ray. Its processes start with `serve_ingress`, which is taken back from
    this process once Ray runs: the servers the tests start as subprocesses make their own."""
    import ray

    if ray.is_initialized():  # started by a command a test ran in this process, without serve_ingress
        ray.shutdown()
    start_session_ray(serve_ingress)
    yield ray
    ray.shutdown()


def start_session_ray(serve_ingress: dict[str, str]) -> None:
    """The session's local Ray, its processes started with `serve_ingress` (a test that replaces
    the session's Ray for a while starts it again with this)."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in serve_ingress.items():
            patch.setenv(name, value)
        start_local_ray(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")


@pytest.fixture(scope="session")
def tiny_lake(ray_session, tmp_path_factory) -> Lake:
    """The tiny synthetic lake, validated and merged. Read-only: copy it before changing it."""
    from jobs import generate, merge, validate

    lake = Lake(tmp_path_factory.mktemp("tiny") / "lake")
    generate.main(generate.GenerateConfig(scale="tiny", seed=TINY_SEED), lake)
    checked = validate.main(validate.ValidateConfig(), lake)
    assert checked.exit_code == 0, [v.line() for v in checked.violations]
    merged = merge.main(merge.MergeConfig(), lake)
    assert merged.exit_code == 0, merged.failed
    return lake


@pytest.fixture
def raw_copy(tiny_lake: Lake, tmp_path: Path) -> Lake:
    """A private copy of the tiny lake's raw zone (no curated tables yet)."""
    target = Lake(tmp_path / "lake")
    shutil.copytree(tiny_lake.root / "raw", target.root / "raw")
    return target


@pytest.fixture
def lake_copy(tiny_lake: Lake, tmp_path: Path) -> Lake:
    """A private copy of the tiny lake with its curated tables."""
    return copy_lake(tiny_lake, tmp_path / "lake")


def copy_lake(source: Lake, root: Path, zones: tuple[str, ...] = ("raw", "truth")) -> Lake:
    """A copy of `source` at `root`: the files of `zones` (their times kept) and its curated
    tables as its latest commit shows them, as the copy's first commit."""
    target = Lake(root)
    for zone in zones:
        shutil.copytree(source.root / zone, target.root / zone)
    if (source.root / "settings.yaml").exists():
        shutil.copy2(source.root / "settings.yaml", target.root / "settings.yaml")
    source.tables.copy_into(target.tables)
    return target


@pytest.fixture(scope="session")
def chain_lake(ray_session, tmp_path_factory) -> Lake:
    """The `chain` lake (seed 42): 30 cities × 20 stores, a small catalogue, 400 days — what the
    location family needs to learn from (about 90 s to generate and merge). Read-only."""
    from jobs import generate, merge

    lake = Lake(tmp_path_factory.mktemp("chain") / "lake")
    generate.main(generate.GenerateConfig(scale="chain", seed=42), lake)
    merged = merge.main(merge.MergeConfig(), lake)
    assert merged.exit_code == 0, merged.failed
    return lake


@pytest.fixture(scope="session")
def small_lake(ray_session, tmp_path_factory) -> Lake:
    """The small lake (seed 42), generated and merged once for the quality tests (about 100 s).
    Read-only."""
    from jobs import generate, merge

    lake = Lake(tmp_path_factory.mktemp("small") / "lake")
    generate.main(generate.GenerateConfig(scale="small", seed=42), lake)
    assert merge.main(merge.MergeConfig(), lake).exit_code == 0
    return lake


# --- the production tracking store: `mlflow server` on PostgreSQL ------------------------------------

def listening_addresses(port: int) -> set[str]:
    """The local addresses a TCP server listens on at `port` (from `ss`): {"127.0.0.1"} for a
    server on loopback only, "0.0.0.0" or "*" for one on every interface."""
    out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, timeout=10).stdout
    return {line.split()[3].rsplit(":", 1)[0] for line in out.splitlines() if line.strip()}


class Postgres:
    """A private PostgreSQL server from Debian's packages: initdb in a temporary folder, loopback
    only, trust authentication for its one user `quanyu`. Runs as the `postgres` system user when
    the tests run as root (PostgreSQL refuses root)."""

    def __init__(self, root: Path) -> None:
        import pwd

        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        assert found, "PostgreSQL's server is not installed: `make test` installs Debian's postgresql package"
        self.bin, self.root, self.data, self.port = found[-1].parent, root, root / "data", free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(root, user.pw_uid, user.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "quanyu", "--no-sync")
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self.as_user, str(self.bin / tool), *args], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "postgres.log"), "-w", "-o",
                  f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def create_database(self, name: str) -> str:
        subprocess.run([str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "quanyu", name],
                       check=True, capture_output=True, timeout=60)
        return f"postgresql+psycopg://quanyu@127.0.0.1:{self.port}/{name}"


@pytest.fixture(scope="session")
def postgres():
    import tempfile

    # not under pytest's temporary root: that is private to this user, and the server may run as
    # the `postgres` user
    root = Path(tempfile.mkdtemp(prefix="quanyu-postgres-"))
    try:
        server = Postgres(root)
        yield server
        try:
            server.stop()
        except subprocess.CalledProcessError:
            pass  # a test stopped it already
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def mlflow_server(postgres: Postgres, name: str, artifacts: Path):
    """An `mlflow server` on its own PostgreSQL database, as docs/production.md sets one up:
    yields (url, store uri), stops it (and its workers) on exit."""
    import requests

    from jobs.processes import stop_server
    from serving.families import wait_until

    store = postgres.create_database(name)
    port = free_port()
    log = artifacts / "server.log"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no job runner and its consumers: Quanyu submits none
    server = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", store,
                               "--artifacts-destination", str(artifacts / "artifacts"),
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
                              env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert server.poll() is None, log.read_text()[-3000:]
        try:
            return requests.get(f"{url}/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    try:
        assert wait_until(up, 120, 0.5), log.read_text()[-3000:]
        yield url, store
    finally:
        # its process group: the server and its workers. A worker whose database went away
        # mid-request (the store-down tests) holds its shutdown until that request gives up: a
        # test's server has nothing to finish, so it gets 5 s
        stop_server(server, grace=5.0)
