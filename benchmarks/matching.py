"""`quanyu bench matching`: what the matching family costs, how fast it answers, and how it
compares with an implicit-feedback matrix factorisation on the same split.

On one lake:
- training: the family's whole evaluation-and-fit (snapshots, candidates on Ray, the ranker,
  the holdout, the production ranker and snapshot), wall time and peak memory;
- recommend(member, k=10, channel) in-process for 500 members: p50 / p99 latency;
- the peer: implicit's ALS (in .venv-peers) fitted on the same member × item purchases up to the
  holdout cutoff, recommending 10 available SKUs to the same holdout members, scored with the
  same NDCG@10 / Recall@10; its fit time next to our ranker's.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time
from pathlib import Path

import numpy as np

from benchmarks.lake import PeakMemory
from jobs.train import read
from lake.store import Lake
from models.matching.config import MatchingConfig
from models.matching.model import evaluate, fit_ranker, purchases_between, ranking_metrics
from models.matching.state import MatchingState
from models.matching.training import build_recommender

PEERS_PYTHON = Path(__file__).resolve().parents[1] / ".venv-peers" / "bin" / "python"
PEER = Path(__file__).resolve().parent / "peers" / "implicit_als.py"
# a small grid, so the peer is compared at its best setting on this data, not at one guess
ALS_GRID = [{"factors": f, "iterations": 15, "regularization": r, "alpha": a}
            for f in (16, 64) for r in (0.1, 10.0) for a in (1.0, 20.0)]


def main(lake_root: Path, out: Path, config: MatchingConfig) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    lake = Lake(lake_root)
    report: dict = {"lake": str(lake_root)}

    def train():
        data = read("matching", config, lake)
        evaluation = evaluate(data, config)
        recommender = build_recommender(data, config)
        return data, evaluation, recommender

    started = time.perf_counter()
    with PeakMemory() as memory:
        data, evaluation, recommender = train()
    report["training"] = {"seconds": round(time.perf_counter() - started, 1), "peak_gb": round(memory.peak_bytes / 1e9, 2),
                          "members": len(data.members), "skus": len(data.products),
                          "interactions": len(data.interactions)}
    m = evaluation.metrics
    report["quanyu"] = {k: round(m[k], 4) for k in ("ndcg_at_10", "recall_at_10", "map_at_10", "catalogue_coverage",
                                                    "candidate_recall", "ndcg_at_10_popularity", "ndcg_at_10_oracle")
                        if k in m}
    print(f"training {report['training']}", flush=True)

    ids = recommender.state.members["member_id"].to_numpy()
    active = ids[recommender.state.has_history(np.arange(len(ids)))][:500]
    recommender.recommend(active[0], 10, "online")
    latencies = []
    for member in active:
        t0 = time.perf_counter()
        recommender.recommend(member, 10, "online")
        latencies.append(time.perf_counter() - t0)
    report["recommend_ms"] = {"p50": round(float(np.percentile(latencies, 50)) * 1e3, 2),
                              "p99": round(float(np.percentile(latencies, 99)) * 1e3, 2), "requests": len(latencies)}
    print(f"recommend {report['recommend_ms']}", flush=True)

    # the same split as the evaluation: a snapshot at the holdout cutoff, the same sampled members
    h = config.evaluation.holdout_days
    cutoff = data.data_date - dt.timedelta(days=h)
    state = MatchingState.build(data.interactions, data.members, data.products, cutoff, config.candidates)
    t0 = time.perf_counter()
    fit_ranker(data, cutoff - dt.timedelta(days=h), config)
    ranker_seconds = time.perf_counter() - t0
    holdout = purchases_between(data.interactions, cutoff, data.data_date)
    members = state.member_positions(holdout["member_id"].unique())
    members = np.sort(members[members >= 0])
    rng = np.random.default_rng(config.training.seed + 1)
    if len(members) > config.evaluation.max_members:
        members = np.sort(rng.choice(members, size=config.evaluation.max_members, replace=False))
    relevant_by = holdout.groupby("member_id")["sku_id"].agg(set)
    relevant = [{p for p in state.item_positions(relevant_by.get(state.members["member_id"].iat[m], ())) if p >= 0}
                for m in members]
    report["ranker_fit_seconds"] = round(ranker_seconds, 1)
    runs = []
    for run in implicit_als(state.history.tocoo(), members, config.evaluation.k,
                            state.items["available"].to_numpy(), out):
        if "items" in run:
            als = ranking_metrics(list(run.pop("items")), relevant, config.evaluation.k)
            run.update(ndcg_at_10=round(als["ndcg"], 4), recall_at_10=round(als["recall"], 4),
                       map_at_10=round(als["map"], 4))
        runs.append(run)
        print(f"peer {runs[-1]}", flush=True)
    scored = [r for r in runs if "ndcg_at_10" in r]
    report["implicit_als_grid"] = runs
    if scored:
        report["implicit_als"] = max(scored, key=lambda r: r["ndcg_at_10"])
        report["ndcg_ratio_quanyu_to_als"] = round(m["ndcg_at_10"] / max(report["implicit_als"]["ndcg_at_10"], 1e-9), 2)
    else:
        report["implicit_als"] = runs[-1] if runs else {"error": "no run"}
    print(f"best peer {report['implicit_als']}", flush=True)
    (out / "matching.json").write_text(json.dumps(report, indent=1))
    return report


def implicit_als(history, members: np.ndarray, k: int, allowed: np.ndarray, folder: Path,
                 exclude_own: bool = False) -> list[dict]:
    """implicit's ALS (in .venv-peers) at every ALS_GRID setting on the member × item matrix
    `history` (scipy COO): per setting, the settings with `items` (len(members) × k item
    positions) and its fit and recommend seconds, or `error`."""
    runs = []
    for settings in ALS_GRID:
        instance, result = folder / "als_instance.npz", folder / "als_result.npz"
        np.savez(instance, rows=history.row, cols=history.col, values=history.data, shape=np.array(history.shape),
                 members=members, k=k, allowed=allowed, exclude_own=exclude_own, **settings)
        done = subprocess.run([str(PEERS_PYTHON), str(PEER), str(instance), str(result)], capture_output=True,
                              text=True, timeout=3600)
        if done.returncode != 0:
            runs.append({**settings, "error": done.stderr.strip().splitlines()[-3:]})
            continue
        peer = np.load(result)
        runs.append({**settings, "items": peer["items"], "fit_seconds": round(float(peer["fit_seconds"]), 2),
                     "recommend_seconds": round(float(peer["recommend_seconds"]), 2)})
    return runs


def item_knn(history, members: np.ndarray, k: int, exclude_own: bool = True) -> np.ndarray:
    """Item-based nearest neighbours: items scored by the summed cosine similarity (over members
    who bought both) to each member's own items, the member's own items left out when
    `exclude_own`. `history`: scipy sparse member × item counts. Returns len(members) × k item
    positions."""
    from scipy import sparse

    bought = sparse.csr_matrix(history, dtype=np.float64)
    bought.data[:] = 1.0
    norms = np.sqrt(np.asarray(bought.multiply(bought).sum(axis=0))).ravel()
    norms[norms == 0] = 1.0
    scaled = bought @ sparse.diags(1.0 / norms)
    similarity = (scaled.T @ scaled).toarray()
    np.fill_diagonal(similarity, 0.0)
    scores = np.asarray((bought[members] @ similarity))
    if exclude_own:
        scores[bought[members].toarray() > 0] = -np.inf
    top = np.argpartition(-scores, min(k, scores.shape[1] - 1), axis=1)[:, :k]
    order = np.take_along_axis(scores, top, axis=1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(top, order, axis=1)
