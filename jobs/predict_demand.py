"""Job: batch-score the demand model into lake/forecasts/demand/dt=<origin>/.

Steps:
1. download the registered version (`models:/quanyu-demand@<alias>`, default champion) once;
2. list the active store × SKU series: those with a row in the model's last 28 days of history;
3. score them with Ray Data — one actor per worker loads the forecaster once and forecasts a
   batch of series for every day of the horizon, with the planned prices and promotions;
4. write Parquet under forecasts/demand/dt=<origin>/ (replacing an earlier run of that origin).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lake.store import Lake
from models.demand.forecaster import DemandForecaster
from models.registry import model_uri


@dataclass
class PredictResult:
    version: str
    origin: str
    series: int
    rows: int
    path: str
    seconds: float


class _ForecastBatch:
    """A Ray Data actor: loads the forecaster once, forecasts batches of series."""

    def __init__(self, folder: str) -> None:
        self.forecaster = DemandForecaster.load(folder)
        self.horizon = self.forecaster.config.features.horizon

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        f = self.forecaster
        days = [f.origin_ + pd.Timedelta(days=h).to_pytimedelta() for h in range(1, self.horizon + 1)]
        rows = f.planned_rows(batch[["store_id", "sku_id"]], days)
        p50 = f.predict(rows)
        p10, p90 = f.intervals(p50)
        return rows.assign(p10=p10.astype(np.float32), p50=p50.astype(np.float32), p90=p90.astype(np.float32),
                           origin=f.origin_)


def main(lake: Lake, tracking_uri: str, alias: str = "champion", batch_series: int = 500) -> PredictResult:
    """Score every active series; Ray must be initialised. Raises mlflow's error when the
    alias does not exist (the CLI turns it into a message)."""
    import mlflow
    import ray.data

    started = time.monotonic()
    mlflow.set_tracking_uri(tracking_uri)
    uri = model_uri("demand", alias)
    version = mlflow.MlflowClient().get_model_version_by_alias("quanyu-demand", alias).version
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(uri, dst_path=tmp)
        folder = str(Path(local) / "artifacts" / "forecaster")
        forecaster = DemandForecaster.load(folder)
        recent = forecaster.panel_.units[:, -28:]
        active = forecaster.panel_.series[~np.isnan(recent).all(axis=1)].reset_index(drop=True)
        target = lake.partition_dir("forecasts", "demand", forecaster.origin_)
        staging = target.parent / f".{target.name}.staging"
        shutil.rmtree(staging, ignore_errors=True)
        # the actor pool leaves one CPU free: actors holding every CPU would starve the tasks
        # that feed them (a deadlock on a small cluster)
        actors = max(1, min(4, int(ray.cluster_resources().get("CPU", 1)) - 1))
        ray.data.from_pandas(active).repartition(max(1, len(active) // batch_series)).map_batches(
            _ForecastBatch, fn_constructor_args=(folder,), batch_format="pandas", batch_size=batch_series,
            concurrency=actors, num_cpus=1).write_parquet(str(staging))
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    rows = sum(pd.read_parquet(p, columns=["p50"]).shape[0] for p in target.glob("*.parquet"))
    return PredictResult(version=str(version), origin=str(forecaster.origin_), series=len(active), rows=rows,
                         path=str(target), seconds=round(time.monotonic() - started, 1))
