"""Training the demand booster where the executor says (models/executor.py: in this process by
default, on Ray for the jobs), with the worker layout chosen from the machines it offers.

One LightGBM process with all of a node's threads is the fastest layout on one node (on a
16-core machine, one 16-thread process trained 4M × 40 rows in 10.3 s, two 8-thread data-parallel
processes in 13.0 s), so that is the default: a single piece of work that asks for a whole node's CPUs.
Data-parallel training across nodes (Ray Train's LightGBMTrainer) is used when the config asks
for it or the matrix is larger than `data_parallel_rows` and the cluster has several nodes — and
then always with `tree_learner=data_parallel`, `pre_partition=True` and the network parameters
of `ray.train.lightgbm.get_network_params()`; without them each worker silently trains its own
model on its shard. The model is reported once, at the end: reporting every round cost 200 s
over 4 s of training in our measurement.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

from models.demand.config import TrainingConfig
from models.demand.features import TrainingSet
from models.executor import Executor, Local

log = logging.getLogger(__name__)

# objectives whose hessian is the same for every row: LightGBM's data-parallel learner counts a
# leaf's rows from its hessian sum, which is exact only for these
CONSTANT_HESSIAN = {"regression", "regression_l2", "l2", "mean_squared_error", "mse", "l2_root",
                    "root_mean_squared_error", "rmse", "regression_l1", "l1", "mean_absolute_error", "mae",
                    "quantile", "huber"}


@dataclass(frozen=True)
class Layout:
    """How training runs: `workers` LightGBM processes of `cpus_per_worker` threads each."""

    workers: int
    cpus_per_worker: int
    data_parallel: bool

    def describe(self) -> str:
        mode = "data-parallel" if self.data_parallel else "single"
        return f"{mode}: {self.workers} worker(s) x {self.cpus_per_worker} CPU"


def choose_layout(config: TrainingConfig, rows: int, cpus: list[int]) -> Layout:
    """One multi-threaded worker on the biggest node unless data-parallel training is asked for
    (`always`), or needed (`auto` with more rows than `data_parallel_rows`) and possible (more
    than one node); then one worker per node."""
    if not cpus:
        raise RuntimeError("the Ray cluster has no node with a free CPU; start one or check `ray status`")
    wants = config.distributed == "always" or (config.distributed == "auto" and rows > config.data_parallel_rows)
    if wants and config.distributed != "never" and len(cpus) > 1:
        return Layout(workers=len(cpus), cpus_per_worker=max(1, min(cpus)), data_parallel=True)
    return Layout(workers=1, cpus_per_worker=max(cpus), data_parallel=False)


BIN_SAMPLE_ROWS = 200_000  # LightGBM's own bin_construct_sample_cnt
BATCH_ROWS = 500_000  # rows whose features are built at once while LightGBM bins a TrainingSet


def bin_sample(training: TrainingSet, seed: int) -> np.ndarray:
    """The rows every worker finds its bin boundaries on: the features of a seeded sample of the
    training rows (all of them when few), in row order. LightGBM bins each feature from a sample
    of the rows it holds; in data-parallel training each worker would bin from its own shard, so
    the boundaries — and with them the trees — would depend on how the rows were cut. Binning
    every layout from one sample makes the data-parallel model the serial model up to the order
    of floating-point sums; it also lets a single worker bin rows it never holds all at once."""
    if len(training) <= BIN_SAMPLE_ROWS:
        return training.matrix(slice(None))
    rows = np.sort(np.random.default_rng(seed).choice(len(training), BIN_SAMPLE_ROWS, replace=False))
    return training.matrix(rows)


class _FeatureBatches(lgb.Sequence):
    """A TrainingSet as LightGBM's Sequence: LightGBM asks for consecutive slices of
    `batch_size` rows and bins each before asking for the next, so the float matrix exists one
    slice at a time (LightGBM keeps only the binned values, a byte per feature)."""

    batch_size = BATCH_ROWS

    def __init__(self, training: TrainingSet) -> None:
        self.training = training

    def __len__(self) -> int:
        return len(self.training)

    def __getitem__(self, index: int | slice) -> np.ndarray:
        if isinstance(index, slice):
            return self.training.matrix(index)
        return self.training.matrix(slice(index, index + 1))[0]


def dataset(data: TrainingSet | pd.DataFrame, y: np.ndarray, params: dict, categorical: list[str],
             bins: np.ndarray, columns: list[str]) -> lgb.Dataset:
    """The rows as a LightGBM dataset whose bin boundaries come from `bins` (see bin_sample): a
    TrainingSet binned slice by slice, or a materialised frame (a data-parallel worker's shard)."""
    reference = lgb.Dataset(bins, params=params, feature_name=columns, categorical_feature=categorical,
                            free_raw_data=False).construct()
    rows = _FeatureBatches(data) if isinstance(data, TrainingSet) else data.to_numpy(np.float32)
    return lgb.Dataset(rows, y, params=params, feature_name=columns, categorical_feature=categorical,
                       reference=reference)


def lightgbm_dataset(training: TrainingSet, y: np.ndarray, params: dict, categorical: list[str]) -> lgb.Dataset:
    """A TrainingSet as the LightGBM dataset one worker trains on: binned from its seeded sample
    (bin_sample), slice by slice. What the family's single-worker layout trains on, and what the
    demand benchmark's bare peer times."""
    return dataset(training, y, params, categorical, bin_sample(training, params.get("seed", 0)), training.columns)


def _single(training: TrainingSet, y: np.ndarray, params: dict, rounds: int, categorical: list[str]) -> str:
    return lgb.train(params, lightgbm_dataset(training, y, params, categorical), num_boost_round=rounds).model_to_string()


def _data_parallel_loop(config: dict) -> None:
    import ray.train
    from ray.train.lightgbm import get_network_params

    shard = ray.train.get_dataset_shard("train").materialize().to_pandas()
    X, y = shard.drop(columns="__target__"), shard["__target__"].to_numpy()
    params = {**config["params"], "tree_learner": "data_parallel", "pre_partition": True, **get_network_params()}
    bins = ray.get(config["bins"])
    booster = lgb.train(params, dataset(X, y, params, config["categorical"], bins, list(X.columns)),
                        num_boost_round=config["rounds"])
    checkpoint = None
    with tempfile.TemporaryDirectory() as folder:
        if ray.train.get_context().get_world_rank() == 0:
            Path(folder, "model.txt").write_text(booster.model_to_string())
            checkpoint = ray.train.Checkpoint.from_directory(folder)
        ray.train.report({"rounds": booster.current_iteration()}, checkpoint=checkpoint)


def train_booster(training: TrainingSet, y: np.ndarray, params: dict, rounds: int, layout: Layout,
                  categorical: list[str], executor: Executor | None = None,
                  storage_path: str | None = None) -> lgb.Booster:
    """Train in the given layout; returns the booster (here). A single worker (in this process,
    or a Ray task with the executor OnRay) receives the compact TrainingSet and builds the
    features slice by slice as LightGBM bins them; data-parallel workers (Ray Train, on a cluster
    of several nodes) receive shards of the materialised matrix."""
    executor = executor or Local()
    params = {**params, "num_threads": layout.cpus_per_worker, "verbose": -1}
    if not layout.data_parallel:
        model = executor.call(_single, training, y, params, rounds, categorical, num_cpus=layout.cpus_per_worker)
        return lgb.Booster(model_str=model)
    if not executor.distributed:
        raise ValueError(f"a data-parallel layout ({layout.describe()}) needs a Ray cluster: pass executor=OnRay()")

    import ray
    import ray.data
    import ray.train
    from ray.train.lightgbm import LightGBMTrainer

    if params.get("objective", "regression") not in CONSTANT_HESSIAN:
        log.warning("data-parallel training with objective %s: LightGBM's data-parallel learner estimates each "
                    "leaf's row count from its hessian sum and applies min_data_in_leaf to that estimate, so "
                    "the model can differ from a single worker's (docs/demand.md, 'Training on Ray')",
                    params.get("objective"))

    # rows arrive ordered by date; shards cut in order would give one worker the old half and the
    # other the new half, and LightGBM's per-worker bin boundaries of date-like features would
    # each cover half the calendar. A seeded shuffle makes every shard representative.
    bins = bin_sample(training, params.get("seed", 0))
    order = np.random.default_rng(params.get("seed", 0)).permutation(len(training))
    shuffled = pd.DataFrame(training.matrix(order), columns=training.columns).assign(__target__=y[order])
    data = ray.data.from_pandas(shuffled).repartition(layout.workers)
    del shuffled
    trainer = LightGBMTrainer(
        _data_parallel_loop,
        train_loop_config={"params": params, "rounds": rounds, "categorical": categorical, "bins": ray.put(bins)},
        scaling_config=ray.train.ScalingConfig(num_workers=layout.workers,
                                               resources_per_worker={"CPU": layout.cpus_per_worker},
                                               placement_strategy="SPREAD"),
        run_config=ray.train.RunConfig(storage_path=storage_path or tempfile.mkdtemp(prefix="quanyu-train-")),
        datasets={"train": data},
    )
    result = trainer.fit()
    with result.checkpoint.as_directory() as folder:
        return lgb.Booster(model_str=Path(folder, "model.txt").read_text())

