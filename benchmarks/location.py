"""`quanyu bench location`: what a site recommendation costs, and how good the coverage plans are.

- training: the family's whole fit on a lake (features, spatial CV, final model), wall time and
  peak memory;
- latency: one synthetic city of ~10k and one of ~100k candidate cells (H3 rings drawn by the
  generator's site model, 20 own stores): scoring every site once (when a version loads), then
  `recommend(k=10)` cold (the first request for the city builds its plan) and warm (median of 5),
  with and without a minimum distance;
- coverage: the same recommender in `coverage` mode against spopt's MCLP solved exactly by CBC
  (in .venv-peers) on the same instance: covered population and solve time, and their ratio.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from benchmarks.lake import PeakMemory
from lake.generate.world import build_sites
from lake.store import Lake
from models.location.config import LocationConfig
from jobs.train import read
from models.location.data import training_table
from models.location.features import extra_area_columns, local_km, member_areas, site_features
from models.location.model import SiteModel, evaluate
from models.location.recommender import SiteRecommender

PEERS_PYTHON = Path(__file__).resolve().parents[1] / ".venv-peers" / "bin" / "python"
PEER = Path(__file__).resolve().parent / "peers" / "spopt_mclp.py"


def ring_for(n: int) -> int:
    """The H3 ring radius whose disk holds at least n cells (3r(r+1)+1)."""
    r = 0
    while 3 * r * (r + 1) + 1 < n:
        r += 1
    return r


def synthetic_city(n_sites: int, stores: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    city = pd.DataFrame([{"city": "Benchcity", "tier": 1, "lat": 31.2304, "lon": 121.4737, "size": 1.0}])
    sites = build_sites(city, SimpleNamespace(site_ring=ring_for(n_sites)), rng)
    best = sites.nlargest(stores * 5, "true_potential").sample(stores, random_state=seed)
    own = pd.DataFrame({"store_id": [f"B-{i:03d}" for i in range(stores)], "city": "Benchcity",
                        "lat": best["lat"].to_numpy(), "lon": best["lon"].to_numpy(), "format": "mall",
                        "revenue_annualised": rng.uniform(5e6, 4e7, stores)})
    return sites.drop(columns=[c for c in sites.columns if c.startswith("true_")]), own


def _timed(fn):
    started = time.perf_counter()
    with PeakMemory() as memory:
        out = fn()
    return out, time.perf_counter() - started, memory.peak_bytes / 1e9


def main(lake_root: Path, out: Path, config: LocationConfig, sizes=(10_000, 100_000), mclp_sizes=(2_000, 10_000),
         k: int = 10) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"lake": str(lake_root), "k": k}

    def train():
        data = read("location", config, Lake(lake_root))
        table = training_table(data, config.features, config.training.min_trading_days)
        ev = evaluate(table, data.sites, config, data.truth, extra_area_columns(data.sites))
        model = SiteModel.from_config(config, extra_area_columns(data.sites)).fit(table, smearing=ev.smearing)
        return model, len(table), len(data.sites)

    (model, n_stores, n_sites), seconds, peak = _timed(train)
    report["training"] = {"stores": n_stores, "candidate_sites": n_sites, "seconds": round(seconds, 2),
                          "peak_gb": round(peak, 2)}
    print(f"training on {n_stores} stores, {n_sites:,} sites: {seconds:.1f} s, peak {peak:.2f} GB", flush=True)

    def recommender_for(n: int, seed: int) -> tuple[SiteRecommender, float]:
        sites, own = synthetic_city(n, 20, seed)
        started = time.perf_counter()
        feats = site_features(sites, member_areas(None, None, sites), own, config.features)
        feats[["lat", "lon"]] = sites[["lat", "lon"]].to_numpy()
        rec = SiteRecommender(model, feats, own, config)
        return rec, time.perf_counter() - started

    report["latency"] = []
    for n in sizes:
        rec, load_s = recommender_for(n, 1)
        row = {"sites": len(rec.sites), "load_seconds": round(load_s, 3)}
        for label, kwargs in (("", {}), ("_min_distance", {"min_distance_km": 1.0})):
            started = time.perf_counter()
            rec._plans.clear()
            rec.recommend("Benchcity", k, **kwargs)
            row[f"cold{label}_seconds"] = round(time.perf_counter() - started, 4)
            warm = []
            for _ in range(5):
                started = time.perf_counter()
                rec.recommend("Benchcity", k, **kwargs)
                warm.append(time.perf_counter() - started)
            row[f"warm{label}_p50_seconds"] = round(float(np.median(warm)), 4)
        report["latency"].append(row)
        print(f"latency {row}", flush=True)

    report["coverage"] = []
    radius = config.recommender.service_radius_km
    for n in mclp_sizes:
        rec, _ = recommender_for(n, 2)
        started = time.perf_counter()
        ours = rec.recommend("Benchcity", k, objective="coverage")
        ours_s = time.perf_counter() - started
        row = {"sites": len(rec.sites), "k": k, "radius_km": radius, "quanyu_covered": ours.covered_population,
               "quanyu_seconds": round(ours_s, 3)}
        if PEERS_PYTHON.exists():
            cover, weight = rec._coverage("Benchcity", radius)
            sites = rec.plan("Benchcity").sites
            lat, lon = sites["lat"].to_numpy(float), sites["lon"].to_numpy(float)
            instance = out / f"mclp_{n}.npz"
            np.savez(instance, xy=local_km(lat, lon, float(np.median(lat)), float(np.median(lon))), weight=weight,
                     radius=radius, k=k, feasible=np.ones(len(sites), dtype=bool))
            result_path = out / f"mclp_{n}.json"
            done = subprocess.run([str(PEERS_PYTHON), str(PEER), str(instance), str(result_path)],
                                  capture_output=True, text=True, timeout=3600)
            if done.returncode == 0:
                peer = json.loads(result_path.read_text())
                row.update({"spopt_cbc_covered": peer["covered_weight"], "spopt_cbc_seconds": peer["seconds"],
                            "spopt_status": peer["status"],
                            "ratio_covered": round(ours.covered_population / peer["covered_weight"], 4),
                            "speedup": round(peer["seconds"] / max(ours_s, 1e-9), 1)})
            else:
                row["spopt_error"] = done.stderr.strip().splitlines()[-1:]
        else:
            row["spopt_error"] = "no .venv-peers (make bench creates it)"
        report["coverage"].append(row)
        print(f"coverage {row}", flush=True)
    (out / "location.json").write_text(json.dumps(report, indent=1))
    return report
