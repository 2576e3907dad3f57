"""Job: batch-score the demand model into lake/forecasts/demand/dt=<origin>/.

Steps:
1. download the registered version (`models:/quanyu-demand@<alias>`, default champion) once and
   load it as serving does (models.registry.Registry.load: the version's pyfunc and its
   predictor contract, so batch and online answers of one version come from the same path); with `as_of`, rebuild its
   snapshot of recent history from the lake's curated demand up to that day (the origin becomes
   `as_of`: a backtest's forecasts, or a fresher lake's);
2. list the active store × SKU series: those with a row in the last 28 days before the origin;
3. score them with Ray Data — one actor per worker loads the forecaster once and forecasts a
   batch of series for every day of the horizon, with the planned prices and promotions;
4. write Parquet under forecasts/demand/dt=<origin>/ (replacing an earlier run of that origin).
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from jobs.runtime import quiet_data_context
from lake.store import Lake, LakeError
from models.demand.forecaster import DemandForecaster, lookback_days
from models.metrics import series_scales, wrmsse
from models.registry import Registry, load_local


@dataclass
class PredictResult:
    version: str
    origin: str
    series: int
    rows: int
    path: str
    seconds: float
    model_origin: str = ""  # the last day the model was trained on
    in_sample: bool = False  # the origin is before model_origin: the model saw the days it forecasts
    backtest: dict | None = None  # when the lake has days after the origin: the forecasts scored on them


class _ForecastBatch:
    """A Ray Data actor: loads the version once (from the folder of its subclass, see
    `_batches_from`; with `as_of`, moved to that day's history), forecasts batches of series."""

    folder: str  # the version's artifacts, as Registry.load(download_to=…) copied them
    history: str | None = None  # Parquet of the curated demand the snapshot is rebuilt from
    as_of: dt.date | None = None

    def __init__(self) -> None:
        self.forecaster = load_local("demand", self.folder)
        if self.as_of is not None:
            self.forecaster = self.forecaster.as_of(pd.read_parquet(self.history), self.as_of)
        self.horizon = self.forecaster.config.features.horizon

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        f = self.forecaster
        days = [f.origin_ + pd.Timedelta(days=h).to_pytimedelta() for h in range(1, self.horizon + 1)]
        rows = f.planned_rows(batch[["store_id", "sku_id"]], days)
        p50 = f.predict(rows)
        p10, p90 = f.intervals(p50)
        return rows.assign(p10=p10.astype(np.float32), p50=p50.astype(np.float32), p90=p90.astype(np.float32),
                           origin=f.origin_)


def main(lake: Lake, tracking_uri: str, alias: str = "champion", batch_series: int = 500,
         as_of: dt.date | None = None) -> PredictResult:
    """Score every active series; Ray must be initialised. Raises mlflow's error when the
    alias does not exist (the CLI turns it into a message), LakeError when `as_of` needs curated
    demand the lake does not have, ValueError when it has none before `as_of`."""
    import ray.data

    if lake.remote:  # the forecasts zone is swapped in by a folder rename, which an object store lacks
        raise LakeError(f"batch forecasts are written into a lake on this machine's disk only, not into {lake.root} "
                        "(yet): score into a local --lake, or call the serving API's batched forecasts")
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        loaded = Registry(tracking_uri).load("demand", alias=alias, download_to=Path(tmp) / "version")
        version, forecaster = loaded.version, loaded.predictor
        model_origin = forecaster.origin_
        history = None
        if as_of is not None:
            demand = _demand_up_to(lake, forecaster, as_of)
            forecaster = forecaster.as_of(demand, as_of)
            history = str(Path(tmp) / "history.parquet")
            demand.to_parquet(history)
        recent = forecaster.panel_.units[:, -28:]
        active = forecaster.panel_.series[~np.isnan(recent).all(axis=1)].reset_index(drop=True)
        target = lake.partition_dir("forecasts", "demand", forecaster.origin_)
        staging = target.parent / f".{target.name}.staging"
        shutil.rmtree(staging, ignore_errors=True)
        # the actor pool leaves one CPU free: actors holding every CPU would starve the tasks
        # that feed them (a deadlock on a small cluster)
        actors = max(1, min(4, int(ray.cluster_resources().get("CPU", 1)) - 1))
        # no actor restarts: a lost actor fails the job, and a rerun replaces the partition whole
        # (a restartable actor would also have Ray warn about its arguments in the object store)
        quiet_data_context()
        with warnings.catch_warnings():  # Ray 2.60 takes max_restarts only in its deprecated **ray_remote_args
            warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
            ray.data.from_pandas(active).repartition(max(1, len(active) // batch_series)).map_batches(
                _batches_from(loaded.path, history, as_of), batch_format="pandas", batch_size=batch_series,
                compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=1,
                max_restarts=0).write_parquet(str(staging))
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        forecasts = pd.read_parquet(target)
        scored = backtest(lake, forecaster, forecasts)
    return PredictResult(version=str(version), origin=str(forecaster.origin_), series=len(active), rows=len(forecasts),
                         path=str(target), seconds=round(time.monotonic() - started, 1),
                         model_origin=str(model_origin), in_sample=forecaster.origin_ < model_origin,
                         backtest=scored)


def _batches_from(folder: str, history: str | None, as_of: dt.date | None) -> type[_ForecastBatch]:
    """The actor class bound to the version's folder (and the as-of history). Class attributes
    rather than constructor arguments: Ray keeps constructor arguments in the object store and
    warns that a restarted actor could lose them; a class travels with the actor's definition."""
    return type("ForecastBatch", (_ForecastBatch,), {"folder": folder, "history": history, "as_of": as_of})


def backtest(lake: Lake, forecaster: DemandForecaster, forecasts: pd.DataFrame) -> dict | None:
    """The forecasts scored on the lake's curated days after their origin, when it has any: the
    WRMSSE of P50 and of the 28-day moving average on the same rows (the simple peer), and how
    much of the actual units and rows fell inside P10–P90. None when no day follows the origin."""
    origin = forecaster.origin_
    horizon = forecaster.config.features.horizon
    after = [d for d in lake.partitions("curated", "demand_daily") if origin < d <= origin + dt.timedelta(days=horizon)]
    if not after:
        return None
    columns = ["dt", "store_id", "sku_id", "units_sold", "revenue_net"]
    actual = lake.read_all("curated", "demand_daily", columns=columns, days=after).to_pandas()
    keys = ["store_id", "sku_id", "dt"]
    rows = actual.assign(dt=pd.to_datetime(actual["dt"])).merge(
        forecasts[[*keys, "p10", "p50", "p90"]].assign(dt=lambda f: pd.to_datetime(f["dt"])), on=keys)
    if rows.empty:
        return None
    rows["moving_average"] = forecaster.moving_averages(rows["store_id"].to_numpy(object), rows["sku_id"].to_numpy(object))
    history = lake.read_all("curated", "demand_daily", columns=columns,
                            days=[d for d in lake.partitions("curated", "demand_daily")
                                  if origin - dt.timedelta(days=lookback_days(forecaster.config)) < d <= origin]).to_pandas()
    scales = series_scales(history)
    units = rows["units_sold"].to_numpy(dtype=float)
    inside = (units >= rows["p10"].to_numpy()) & (units <= rows["p90"].to_numpy())
    return {"days": len(after), "rows": len(rows),
            "wrmsse": wrmsse(None, rows, prediction="p50", scales=scales),
            "wrmsse_moving_average": wrmsse(None, rows, prediction="moving_average", scales=scales),
            "coverage_rows": float(inside.mean()),
            "coverage_units": float(units[inside].sum() / units.sum()) if units.sum() > 0 else float("nan")}


def _demand_up_to(lake: Lake, forecaster: DemandForecaster, day: dt.date) -> pd.DataFrame:
    """The curated demand rows the forecaster's snapshot is rebuilt from, as of `day`."""
    days = [d for d in lake.partitions("curated", "demand_daily")
            if day - dt.timedelta(days=lookback_days(forecaster.config)) < d <= day]
    if not days:
        raise LakeError(f"the lake at {lake.root} has no curated demand on or before {day}; "
                        f"choose a later --as-of (quanyu data describe shows the days) or run quanyu data merge")
    return lake.read_all("curated", "demand_daily", columns=["dt", "store_id", "sku_id", "units_sold"],
                         days=days).to_pandas()
