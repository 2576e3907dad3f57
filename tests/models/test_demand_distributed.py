"""Data-parallel training on a two-node Ray cluster trains one model on all the data.

Without tree_learner/pre_partition/network params each worker would silently train its own
model on its half; the root of every tree of a genuine data-parallel model counts all the
training rows (two half-models would count half). Both layouts bin the features from one sample
of the whole matrix (models/demand/train.py: bin_sample), so the data-parallel model scores
within the issue's 2 % of the single worker's on the same holdout (measured: 0.5 %; before the
shared bins each worker binned its own shard and the gap was 0.7–2.2 %).

That holds for objectives whose hessian is constant (L2, which the score test uses). With
tweedie or poisson, LightGBM's data-parallel learner carries each leaf's row count as an
estimate from its hessian sum instead of counting rows, and enforces min_data_in_leaf (and the
categorical count rules) on that estimate: the trees take the same splits at the same gains,
but the counts drift with depth (3,426 rows estimated as 7,411 on the tiny lake) and later
splits differ (a tree dump shows it; docs/demand.md has the measurements). Production keeps
one worker per model unless the matrix outgrows a node."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from models.demand.forecaster import DemandForecaster
from models.demand.train import Layout
from models.metrics import wrmsse
from tests.conftest import start_session_ray
from tests.models.test_demand import FAST


@pytest.fixture
def two_node_cluster(ray_session, serve_ingress):
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    cluster.add_node(num_cpus=2)
    ray.init(address=cluster.address, log_to_driver=False, logging_level="ERROR")
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
        start_session_ray(serve_ingress)


@pytest.mark.heavy
def test_data_parallel_on_two_nodes_matches_one_worker(tiny_lake, two_node_cluster):
    import ray

    from jobs.train import read
    from models.demand.config import DemandConfig
    from models.executor import OnRay

    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    data, _ = read("demand", DemandConfig(), tiny_lake)
    origin = max(data.demand["dt"]) - dt.timedelta(days=28)
    history = data.demand[data.demand["dt"] <= origin]
    holdout = data.demand[data.demand["dt"] > origin].copy()
    config = FAST.model_copy(update={"training": FAST.training.model_copy(update={
        "params": {**FAST.training.params, "objective": "regression"}})})
    scores, rmse = {}, {}
    for name, layout in (("single", Layout(1, 1, False)), ("data_parallel", Layout(2, 1, True))):
        forecaster = DemandForecaster(config).fit(data, origin=origin, layout=layout, executor=OnRay())
        roots = [t["tree_structure"]["internal_count"] for t in forecaster.booster_.dump_model()["tree_info"][:5]]
        assert roots == [forecaster.training_rows_] * 5, (name, roots, forecaster.training_rows_)
        holdout[name] = forecaster.predict(holdout)
        scores[name] = wrmsse(history, holdout, prediction=name)
        rmse[name] = float(np.sqrt(np.mean((holdout["units_sold"] - holdout[name]) ** 2)))
    assert abs(rmse["data_parallel"] - rmse["single"]) / rmse["single"] < 0.02, rmse
    assert abs(scores["data_parallel"] - scores["single"]) / scores["single"] < 0.02, scores

