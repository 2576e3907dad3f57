"""One registry (the three families trained on the tiny lake, each version 1 the champion) and one
running Serve app on it, shared by the API tests and the planner's browser tests."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
import requests
from mlflow import MlflowClient

from jobs import train
from jobs.processes import free_port
from models.location.config import LocationConfig
from models.registry import set_alias
from serving.families import wait_until
from tests.models.test_demand import FAST as DEMAND_FAST
from tests.models.test_matching import FAST as MATCHING_FAST

KEY, ADMIN = "test-key-0123456789", "admin-key-9876543210"


def haproxy_config(serve_ingress: dict[str, str]) -> str:
    """The config Serve wrote last for the session's HAProxy ('' when there is none): in a folder
    per node beside the path it was given (a Serve of an earlier Ray of the session, whose node
    had another id, may have left its own)."""
    given = Path(serve_ingress["RAY_SERVE_HAPROXY_CONFIG_FILE_LOC"])
    found = sorted(given.parent.glob(f"*/{given.name}"), key=lambda p: p.stat().st_mtime)
    return found[-1].read_text() if found else ""


@pytest.fixture(scope="package")
def registry(tiny_lake, ray_session, tmp_path_factory):
    """All three families trained on the tiny lake, each version 1 promoted to champion."""
    home = tmp_path_factory.mktemp("serving")
    uri = f"sqlite:///{home / 'mlflow.db'}"
    artifacts = str(home / "mlartifacts")
    runs = {family: train.main(family, config, tiny_lake, uri, artifact_root=artifacts)
            for family, config in (("demand", DEMAND_FAST), ("matching", MATCHING_FAST), ("location", LocationConfig()))}
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    for family in runs:
        set_alias(family, 1, "champion", client)
    return uri, runs


@pytest.fixture(scope="package")
def server(registry, serve_ingress):
    from ray import serve

    from serving import app

    uri, runs = registry
    port = free_port()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("QUANYU_API_KEYS", KEY)
        patch.setenv("QUANYU_ADMIN_KEYS", ADMIN)
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        # three location replicas (test_reliability kills one and deletes the champion's files under
        # load), a twelfth of a CPU each: the apps must still fit in one of the session's two CPUs
        # beside the planner's second set (a quarter each for the root and the other families)
        three = {"num_replicas": 3, "ray_actor_options": {"num_cpus": 0.08}}
        app.run({"tracking_uri": uri, "poll_seconds": 0.5, "deployments": {"Family-location": three}})
    base = f"http://127.0.0.1:{port}"

    last: list = []

    def ready() -> bool:
        try:
            got = requests.get(f"{base}/v1/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=5)
            last[:] = [got.status_code, got.text[:2000]]
            return got.status_code == 200 and all(f["version"] for f in got.json()["families"])
        except requests.RequestException as exc:
            last[:] = [repr(exc)]
            return False

    assert wait_until(ready, 180, 1.0), f"the Serve app did not come up: {last}"
    assert haproxy_config(serve_ingress), "Serve runs no HAProxy: the session's Ray started without serve_ingress"
    yield base, uri, runs
    app.delete()
    serve.shutdown()


