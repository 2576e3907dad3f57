"""The daily retrain end to end: `quanyu retrain` in its own process, submitted to a 2-node local
Ray cluster (`ray.cluster_utils.Cluster`), on a copy of the tiny lake whose last day arrives with
a broken partition. Then: the same date again changes nothing, a worse config is refused with its
reason, a run killed half-way finishes the rest when started again, and the registry commands
promote and roll back."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from mlflow import MlflowClient

from lake.store import Lake
from tests.models.test_demand import FAST as DEMAND_FAST
from tests.models.test_matching import FAST as MATCHING_FAST

QUANYU = str(Path(sys.executable).parent / "quanyu")


@pytest.fixture(scope="module")
def cluster():
    """Two Ray nodes (1 CPU each) that this test process does not join: the CLI connects to them."""
    from ray.cluster_utils import Cluster

    made = Cluster(initialize_head=True, connect=False,
                   head_node_args={"num_cpus": 1, "object_store_memory": 150 * 2**20, "include_dashboard": False})
    made.add_node(num_cpus=1, object_store_memory=150 * 2**20)
    made.wait_for_nodes()
    yield made
    made.shutdown()


@pytest.fixture(scope="module")
def home(tiny_lake, tmp_path_factory) -> Path:
    """QUANYU_HOME with a raw-only copy of the tiny lake, fast family configs and a retrain config."""
    home = tmp_path_factory.mktemp("retrain")
    shutil.copytree(tiny_lake.root / "raw", home / "lake" / "raw")
    shutil.copytree(tiny_lake.root / "truth", home / "lake" / "truth")
    (home / "demand.yaml").write_text(yaml.safe_dump(DEMAND_FAST.model_dump(mode="json")))
    (home / "matching.yaml").write_text(yaml.safe_dump(MATCHING_FAST.model_dump(mode="json")))
    retrain = yaml.safe_load((Path(__file__).parents[2] / "configs" / "retrain.yaml").read_text())
    retrain["configs"] = {"demand": str(home / "demand.yaml"), "matching": str(home / "matching.yaml")}
    (home / "retrain-stop.yaml").write_text(yaml.safe_dump(retrain))  # the default: stop at a quarantine
    retrain["on_quarantine"] = "continue"
    (home / "retrain.yaml").write_text(yaml.safe_dump(retrain))
    return home


def quanyu(home: Path, *args: str, address: str | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env.update(QUANYU_HOME=str(home), PYTHONUNBUFFERED="1")
    head = ["--ray-address", address] if address else []
    return subprocess.run([QUANYU, *head, *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def cli(home, monkeypatch, capsys):
    """`quanyu …` in this process (for the commands that need no cluster): (exit status, out, err)."""
    from jobs.cli import main

    monkeypatch.setenv("QUANYU_HOME", str(home))
    for name in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        with pytest.raises(SystemExit) as done:
            main(list(args))
        out = capsys.readouterr()
        return done.value.code, out.out, out.err

    return run


def versions(home: Path, family: str) -> list[str]:
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    return sorted((str(v.version) for v in client.search_model_versions(f"name='quanyu-{family}'")), key=int)


def champion(home: Path, family: str) -> str | None:
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    try:
        return str(client.get_model_version_by_alias(f"quanyu-{family}", "champion").version)
    except Exception:
        return None


@pytest.fixture(scope="module")
def first(home, cluster):
    """The first daily run: the last day's POS partition arrives with refunds of the wrong sign."""
    lake = Lake(home / "lake")
    day = max(lake.partitions("raw", "pos_transactions"))
    path = lake.files("raw", "pos_transactions", day)[0]
    table = pq.read_table(path)
    quantity = table.column("quantity").to_pylist()
    quantity[0] = -abs(quantity[0]) if not table.column("is_refund")[0].as_py() else abs(quantity[0])
    column = table.schema.get_field_index("quantity")
    pq.write_table(table.set_column(column, "quantity", pa.array(quantity, table.schema.field(column).type)), path)
    got = quanyu(home, "retrain", "--lake", str(home / "lake"), "--config", str(home / "retrain.yaml"),
                 "--date", str(day), address=cluster.address)
    return got, day


def test_a_full_retrain_trains_gates_promotes_and_reports(first, home):
    got, day = first
    assert got.returncode == 3, got.stdout + got.stderr[-3000:]
    out = got.stdout
    assert f"retrain {day}: partitions quarantined" in got.stderr and "the families trained on the rest" in got.stderr
    assert "database is locked" not in out + got.stderr  # three families logging at once into SQLite
    assert f"quarantined: pos_transactions {day}" in out and "refund_sign" in out  # said, and the rest trained
    assert (home / "lake" / "quarantine").exists()
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip().split(" ")[0] in
             ("demand", "matching", "location")}
    assert "promoted" in lines["demand"] and "promoted" in lines["matching"]
    # two stores a city: no site model beats the baselines, and the gate says so
    assert "refused" in lines["location"] and "does not beat spearman_" in out
    assert champion(home, "demand") == "1" and champion(home, "matching") == "1" and champion(home, "location") is None

    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    refused = client.get_model_version("quanyu-location", "1")
    assert "does not beat" in refused.tags["refused"]
    # lineage on the version itself
    demand = client.get_model_version("quanyu-demand", "1")
    assert demand.tags["lake_last_dt"] <= str(day) and demand.tags["git_commit"]
    assert json.loads(demand.tags["config"])["training"]["num_boost_round"] == DEMAND_FAST.training.num_boost_round
    assert "demand_daily" in json.loads(demand.tags["datasets"])
    # one parent run, one child per family
    parent = client.search_runs([client.get_experiment_by_name("quanyu-retrain").experiment_id])[0]
    children = client.search_runs([client.get_experiment_by_name(f"quanyu-{f}").experiment_id
                                   for f in ("demand", "matching", "location")],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(r.data.tags["family"] for r in children) == ["demand", "location", "matching"]
    assert parent.data.metrics["demand_promoted"] == 1.0 and parent.data.metrics["location_promoted"] == 0.0


def test_the_same_date_again_changes_nothing(first, home, cluster):
    _, day = first
    commit = Lake(home / "lake").tables.commit_record()
    before = {f: versions(home, f) for f in ("demand", "matching", "location")}
    again = quanyu(home, "retrain", "--lake", str(home / "lake"), "--config", str(home / "retrain.yaml"),
                   "--date", str(day), address=cluster.address)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already done earlier for these data: validate, demand, matching, location" in again.stdout
    assert {f: versions(home, f) for f in before} == before
    assert Lake(home / "lake").tables.commit_record() == commit  # the merge made no new commit
    assert champion(home, "demand") == "1"


def test_a_worse_config_is_refused_with_its_reason(first, home, cluster, cli):
    _, day = first
    worse = DEMAND_FAST.model_dump(mode="json")
    worse["training"]["num_boost_round"] = 2  # a model that has barely started learning
    (home / "demand-worse.yaml").write_text(yaml.safe_dump(worse))
    config = yaml.safe_load((home / "retrain.yaml").read_text())
    config["configs"]["demand"] = str(home / "demand-worse.yaml")
    (home / "retrain-worse.yaml").write_text(yaml.safe_dump(config))
    got = quanyu(home, "retrain", "--lake", str(home / "lake"), "--config", str(home / "retrain-worse.yaml"),
                 "--date", str(day), "--families", "demand", address=cluster.address)
    assert got.returncode == 0, got.stderr[-3000:]
    new = versions(home, "demand")[-1]
    assert new != "1" and champion(home, "demand") == "1"
    reason = MlflowClient(f"sqlite:///{home / 'mlflow.db'}").get_model_version("quanyu-demand", new).tags["refused"]
    # the champion's recipe (another config, the same code) re-scored on the candidate's holdout
    assert "worse than champion v1's" in reason and "its recipe re-scored on this holdout" in reason, reason
    assert "refused" in got.stdout
    code, out, _ = cli("models", "show", "demand")
    assert code == 0 and f"v{new}" in out and "lake 20" in out and "gate: refused: " in out

    # by hand: promote the refused version, then roll back to v1
    code, out, _ = cli("models", "promote", "demand", new)
    assert code == 0 and f"champion v1 -> v{new}" in out
    assert champion(home, "demand") == new
    code, out, _ = cli("models", "rollback", "demand")
    assert code == 0 and f"v{new} -> v1 (rolled back)" in out and champion(home, "demand") == "1"
    code, out, _ = cli("models", "show", "demand")
    assert "v1    champion" in out and "gate: rollback from v" in out
    code, out, _ = cli("models", "list")
    assert code == 0 and "demand" in out and "v1" in out
    code, _, err = cli("models", "promote", "demand", "99")
    assert code != 0 and "has no version 99" in err
    code, _, err = cli("models", "rollback", "location")
    assert code != 0 and "no champion to roll back" in err


def test_a_run_killed_half_way_finishes_the_rest_when_started_again(first, home, cluster):
    """A new day arrives (the next date's state is empty); the run trains the families one after
    another and is killed once the first is recorded; started again, it does only the rest."""
    _, day = first
    config = yaml.safe_load((home / "retrain.yaml").read_text())
    config["parallel"] = False
    config["configs"]["demand"] = str(home / "demand.yaml")
    (home / "retrain-seq.yaml").write_text(yaml.safe_dump(config))
    before = {f: versions(home, f) for f in ("demand", "matching", "location")}
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env.update(QUANYU_HOME=str(home), QUANYU_DEBUG="")
    args = [QUANYU, "--ray-address", cluster.address, "retrain", "--lake", str(home / "lake"), "--config",
            str(home / "retrain-seq.yaml"), "--date", str(day), "--families", "location,matching"]
    state = home / "retrain" / f"{day}.json"
    # this date's families are done already: forget them (keep the validated day) so that the
    # run has training to do, as on a new day
    kept = {k: v for k, v in json.loads(state.read_text()).items() if k not in ("families", "parent_run_id")}
    state.write_text(json.dumps(kept))
    process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if state.exists() and json.loads(state.read_text()).get("families"):
            break
        time.sleep(0.2)
    assert process.poll() is None, "the run ended before it could be killed: " + process.stdout.read()[-2000:]
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    done = json.loads(state.read_text())["families"]
    assert list(done) == ["location"]
    mid = {f: versions(home, f) for f in before}
    assert len(mid["location"]) == len(before["location"]) + 1

    again = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already done earlier for these data: validate, location" in again.stdout
    # matching's champion has the candidate's config and code: its score on this holdout is the candidate's
    assert "within tolerance of champion v1" in again.stdout and "the same recipe" in again.stdout, again.stdout
    after = {f: versions(home, f) for f in before}
    assert after["location"] == mid["location"]  # not trained twice
    assert len(after["matching"]) == len(before["matching"]) + 1


def test_bad_input_gets_a_message_and_an_exit_status(home, cli):
    code, _, err = cli("retrain", "--lake", str(home / "lake"), "--families", "stock")
    assert code == 2 and "unknown family stock" in err and "Traceback" not in err
    code, out, err = cli("retrain", "--lake", str(home / "nothing-here"))
    assert code == 1 and "no raw sales" in out + err
    code, _, err = cli("retrain", "--lake", str(home / "lake"), "--date", "yesterday")
    assert code == 2 and "is not a date" in err


@pytest.fixture(scope="module")
def mlflow_on_postgres(postgres, tmp_path_factory):
    from tests.conftest import mlflow_server

    with mlflow_server(postgres, "retrain", tmp_path_factory.mktemp("mlflow-retrain")) as server:
        yield server


def test_on_mlflow_server_with_postgresql_a_lost_worker_node_fails_one_family_cleanly_and_a_rerun_completes(
        first, home, cluster, mlflow_on_postgres, tmp_path):
    """The production tracking store and a fault at once. The retrain logs through `mlflow server`
    on PostgreSQL; two families train in parallel, one on each node, and the worker node dies. The
    family it was training fails (exit 2, nothing registered, no alias), the other is gated as usual.
    With a node back, the rerun trains only what is left, the three families at once; every
    finished run and version is in PostgreSQL and nothing fell back to a local store."""
    import mlflow
    import sqlalchemy

    url, store = mlflow_on_postgres
    other_home = tmp_path / "home"  # its own retrain state and registry; the same (merged) lake
    other_home.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(QUANYU_HOME=str(other_home), MLFLOW_TRACKING_URI=url, PYTHONUNBUFFERED="1")
    _, last = first
    day = last - dt.timedelta(days=1)  # the last day's POS partition went to quarantine in the first run
    args = [QUANYU, "--ray-address", cluster.address, "retrain", "--lake", str(home / "lake"), "--config",
            str(home / "retrain.yaml"), "--date", str(day)]
    log = tmp_path / "node-lost.log"
    with open(log, "w") as sink:
        process = subprocess.Popen([*args, "--families", "demand,matching"], env=env, stdout=subprocess.PIPE,
                                   stderr=sink, text=True)
        # both tasks placed (one CPU on each node) and training: each family's job has said so in
        # its first line, forwarded from its task to the retrain's log
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not all(f"train {f}: read" in log.read_text() for f in ("demand", "matching")):
            assert process.poll() is None, log.read_text()[-2000:]
            time.sleep(0.2)
        (worker,) = cluster.worker_nodes
        cluster.remove_node(worker, allow_graceful=False)
        out, _ = process.communicate(timeout=600)
    err = log.read_text()
    cluster.add_node(num_cpus=1, object_store_memory=150 * 2**20)
    cluster.wait_for_nodes()

    assert process.returncode == 2, out + err[-3000:]
    assert "Traceback" not in out + err
    failed = [f for f in ("demand", "matching") if f"{f}: training failed" in err]
    assert len(failed) == 1, err[-3000:]
    lost, survivor = failed[0], ({"demand", "matching"} - set(failed)).pop()
    summary = {line.split()[0]: line for line in out.splitlines() if line.strip().split(" ")[0] in ("demand", "matching")}
    assert "failed" in summary[lost] and "promoted" in summary[survivor]
    client = MlflowClient(url)
    assert not client.search_model_versions(f"name='quanyu-{lost}'")  # nothing registered, no alias

    again = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr[-3000:]
    assert f"already done earlier for these data: validate, {survivor}" in again.stdout
    assert "database is locked" not in again.stdout + again.stderr + err
    assert not (other_home / "mlflow.db").exists()  # nothing fell back to a local store
    for family in ("demand", "matching", "location"):
        assert [v.version for v in client.search_model_versions(f"name='quanyu-{family}'")] == ["1"], family
    parents = client.search_runs([client.get_experiment_by_name("quanyu-retrain").experiment_id])
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"  # the rerun resumed the same parent
    children = client.search_runs([client.get_experiment_by_name(f"quanyu-{f}").experiment_id
                                   for f in ("demand", "matching", "location")],
                                  filter_string=f"tags.mlflow.parentRunId = '{parents[0].info.run_id}'")
    finished = sorted(r.data.tags["family"] for r in children if r.info.status == "FINISHED")
    assert finished == ["demand", "location", "matching"] and all(r.data.metrics for r in children
                                                                 if r.info.status == "FINISHED")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(url)
    try:
        model = mlflow.pyfunc.load_model(f"models:/quanyu-{lost}@champion")  # through the server's artifact proxy
        assert model.metadata.run_id
    finally:
        mlflow.set_tracking_uri(previous)
    engine = sqlalchemy.create_engine(store)
    with engine.connect() as db:  # the runs are in PostgreSQL itself
        in_postgres = db.execute(sqlalchemy.text("select count(*) from runs where status = 'FINISHED'")).scalar()
    engine.dispose()
    assert in_postgres == 4  # the parent and the three families


def test_bad_backfilled_future_and_overlong_days_are_quarantined_and_no_alias_moves(first, home, cluster):
    """A backfill of an old, merged day with its lines twice; a partition dated years ahead; a
    10,000,000-character phone hash on another day. The retrain (default on_quarantine: stop,
    no --date) validates every day it would merge, names each problem, exits 3 and moves nothing."""
    lake = Lake(home / "lake")
    days = lake.partitions("raw", "online_orders")
    # the last day's POS lines, quarantined by the first run, land again fixed (else that day
    # misses a table, and the run is rejected: exit 1)
    (quarantined,) = (home / "lake" / "quarantine").glob(f"*/pos_transactions/dt={days[-1]}")
    shutil.move(quarantined, lake.partition_dir("raw", "pos_transactions", days[-1]))
    path = lake.files("raw", "pos_transactions", days[-1])[0]
    table = pq.read_table(path)
    quantity = table.column("quantity").to_pylist()
    quantity[0] = -quantity[0]
    column = table.schema.get_field_index("quantity")
    pq.write_table(table.set_column(column, "quantity", pa.array(quantity, table.schema.field(column).type)), path)
    backfilled, overlong = days[5], days[12]
    path = lake.files("raw", "online_orders", backfilled)[0]
    table = pq.read_table(path)
    pq.write_table(pa.concat_tables([table, table]), path)
    path = lake.files("raw", "online_orders", overlong)[0]
    table = pq.read_table(path)
    hashes = table.column("phone_hash").to_pylist()
    hashes[0] = "9" * 10_000_000
    pq.write_table(table.set_column(table.column_names.index("phone_hash"), "phone_hash", pa.array(hashes, pa.string())),
                   path)
    future = lake.partition_dir("raw", "online_orders", dt.date(2030, 1, 1))
    future.mkdir(parents=True)
    shutil.copy(lake.files("raw", "online_orders", days[-1])[0], future / "part-0.parquet")
    aliases = {f: champion(home, f) for f in ("demand", "matching", "location")}
    before = {f: versions(home, f) for f in aliases}

    got = quanyu(home, "retrain", "--lake", str(home / "lake"), "--config", str(home / "retrain-stop.yaml"),
                 address=cluster.address)
    out = got.stdout + got.stderr
    assert got.returncode == 3, out[-3000:]
    assert "Traceback" not in out and "stopped before the merge" in out
    assert f"retrain {days[-1]}:" in out  # the future partition did not become the retrain's date
    said = {line.split()[2]: line for line in got.stdout.splitlines() if line.strip().startswith("quarantined: online_orders")}
    for day, rule in ((backfilled, "duplicate_key"), (overlong, "string_length"), (dt.date(2030, 1, 1), "future_partition")):
        assert rule in said.get(str(day), ""), (day, rule, out[-3000:])
    assert len(said) == 3
    assert {f: champion(home, f) for f in aliases} == aliases
    assert {f: versions(home, f) for f in aliases} == before
