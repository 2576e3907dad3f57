"""`quanyu bench demand`: the demand family's cost and accuracy against its peers, one run.

On one lake and one origin (28 days before the lake's end):
- preparing the training data (panel, history features, the training rows in compact form):
  wall time and peak memory;
- training through Ray (the layout the family chooses; a single worker builds the feature matrix
  slice by slice as LightGBM bins it) and, as the peer, a bare in-process `lightgbm.train` with the
  same parameters on the same rows and bins (its feature building and binning timed apart from
  its boosting): the ratio is Ray's overhead;
- accuracy (WRMSSE, WAPE) and wall time next to statsforecast's AutoETS (weekly season) and
  CrostonOptimized on the same series and the same holdout rows. statsforecast needs pandas < 3,
  so it runs in its own environment (.venv-peers) as a subprocess reading the same series.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

from benchmarks.lake import PeakMemory
from lake.store import Lake
from models.demand.config import DemandConfig
from models.demand.features import (
    CATEGORICAL, build_panel, feature_columns, history_features, training_set, with_random_origins,
)
from models.demand.train import choose_layout, lightgbm_dataset, train_booster
from models.executor import OnRay
from models.metrics import series_scales, wape, wrmsse

PEERS_PYTHON = Path(__file__).resolve().parents[1] / ".venv-peers" / "bin" / "python"


def _timed(fn):
    started = time.perf_counter()
    with PeakMemory() as memory:
        result = fn()
    return result, round(time.perf_counter() - started, 2), round(memory.peak_bytes / 1e9, 2)


def main(lake_root: Path, folder: Path, config: DemandConfig) -> dict:
    """Run the benchmark on an existing, merged lake; print a table, write results JSON."""
    import ray

    from jobs.train import read

    folder.mkdir(parents=True, exist_ok=True)
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    data, _ = read("demand", config, Lake(lake_root))  # the oracle: not what this measures
    spec, training = config.features, config.training
    origin = max(data.demand["dt"]) - dt.timedelta(days=spec.horizon)
    holdout = data.demand[data.demand["dt"] > origin].copy()
    scales = series_scales(data.demand[data.demand["dt"] <= origin])  # WRMSSE's denominators and weights
    history_rows = data.demand[(data.demand["dt"] <= origin)
                               & (data.demand["dt"] > origin - dt.timedelta(days=training.history_days + spec.history_days))]
    attributes, demand_rows = data.attributes, len(data.demand)
    del data  # at medium scale the whole demand frame is 2.6 GB the steps below do not need

    def prepare():
        panel = build_panel(history_rows)
        history = history_features(panel, spec)
        rows = with_random_origins(history_rows[history_rows["dt"] > origin - dt.timedelta(days=training.history_days)],
                                   spec, training.seed)
        rows = rows[rows["origin"] >= pd.Timestamp(panel.start)]
        return panel, history, training_set(panel, history, rows, attributes, spec), rows["units_sold"].to_numpy(np.float64)

    (panel, history, rows, y), t_prepare, m_prepare = _timed(prepare)
    history_rows = None  # the panel and the training set hold what is needed
    categorical = list(CATEGORICAL)  # categorical features as float codes, as the family trains
    on_ray = OnRay()
    layout = choose_layout(training, len(rows), on_ray.node_cpus())
    params = dict(training.params)
    booster, t_ray, m_ray = _timed(lambda: train_booster(rows, y, params, training.num_boost_round, layout, categorical,
                                                         on_ray))

    # the peer: the same rows, bins and parameters, lgb.train in this process (no Ray)
    bare_params = {**params, "num_threads": layout.cpus_per_worker, "verbose": -1}
    dataset, t_bin, m_bin = _timed(lambda: lightgbm_dataset(rows, y, bare_params, categorical).construct())
    _, t_boost, m_boost = _timed(lambda: lgb.train(bare_params, dataset, num_boost_round=training.num_boost_round))
    t_bare, m_bare = t_bin + t_boost, max(m_bin, m_boost)
    dataset = None

    Xh, _ = feature_columns(panel, history, holdout.assign(origin=pd.Timestamp(origin)), attributes, spec, rows.categories)
    holdout["quanyu"] = np.clip(booster.predict(np.column_stack([Xh[name] for name in rows.columns])), 0, None)
    results = {"lake": str(lake_root), "origin": str(origin), "demand_rows": demand_rows, "series": len(panel.series),
               "training_rows": len(rows), "features": len(rows.columns), "layout": layout.describe(),
               "prepare_s": t_prepare, "prepare_peak_gb": m_prepare,
               "train_ray_s": t_ray, "train_ray_peak_gb": m_ray, "train_bare_lightgbm_s": round(t_bare, 2),
               "bare_features_and_binning_s": t_bin, "bare_boosting_s": t_boost,
               "train_bare_peak_gb": m_bare, "ray_over_bare": round(t_ray / t_bare, 3),
               "models": {"quanyu": {"wrmsse": wrmsse(None, holdout, prediction="quanyu", scales=scales),
                                     "wape": wape(holdout["units_sold"], holdout["quanyu"]),
                                     "seconds": round(t_prepare + t_ray, 1)}}}

    if PEERS_PYTHON.exists():
        units = np.nan_to_num(panel.units)  # closed or unranged days as zero: the peers need gap-free series
        ids = (panel.series["store_id"] + "|" + panel.series["sku_id"]).to_numpy()
        days = pd.date_range(panel.start, periods=panel.days, freq="D")
        active = ~np.isnan(panel.units[:, -56:]).all(axis=1)
        long = pd.DataFrame({"unique_id": np.repeat(ids[active], panel.days), "ds": np.tile(days, active.sum()),
                             "y": units[active].ravel()})
        series_path, out_path, times_path = folder / "series.parquet", folder / "peers.parquet", folder / "peers.json"
        long.to_parquet(series_path)
        started = time.perf_counter()
        done = subprocess.run([str(PEERS_PYTHON), str(Path(__file__).parent / "peers" / "statsforecast_demand.py"),
                               str(series_path), str(spec.horizon), str(out_path), str(times_path)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            results["peers_error"] = done.stderr[-2000:]
        else:
            peers = pd.read_parquet(out_path)
            times = json.loads(times_path.read_text())
            holdout["unique_id"] = holdout["store_id"] + "|" + holdout["sku_id"]
            holdout["ds"] = pd.to_datetime(holdout["dt"])
            scored = holdout.merge(peers, on=["unique_id", "ds"], how="left")
            for name in ("AutoETS", "CrostonOptimized"):
                scored[name] = scored[name].fillna(0.0).clip(lower=0)
                results["models"][name] = {"wrmsse": wrmsse(None, scored, prediction=name, scales=scales),
                                           "wape": wape(scored["units_sold"], scored[name]), "seconds": times[name]}
            results["peers_subprocess_s"] = round(time.perf_counter() - started, 1)
            results["peer_series"] = int(active.sum())
    else:
        results["peers_error"] = f"{PEERS_PYTHON} not found: run `make bench` (it creates .venv-peers)"

    (folder / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"lake {lake_root}, origin {origin}, {len(rows):,} training rows × {len(rows.columns)} features, "
          f"{layout.describe()}")
    print(f"prepare (panel, history, rows)  {t_prepare:8.1f} s   peak {m_prepare:.2f} GB")
    print(f"train via Ray                   {t_ray:8.1f} s   peak {m_ray:.2f} GB   (features built as LightGBM bins them)")
    print(f"bare lightgbm                   {t_bare:8.1f} s   peak {m_bare:.2f} GB   ({t_bin:.1f} s features + binning, "
          f"{t_boost:.1f} s boosting)   ratio Ray / bare = {results['ray_over_bare']}")
    for name, m in results["models"].items():
        print(f"{name:<18} wrmsse {m['wrmsse']:.4f}   wape {m['wape']:.4f}   {m['seconds']:.1f} s")
    if "peers_error" in results:
        print("peers:", results["peers_error"], file=sys.stderr)
    return results
