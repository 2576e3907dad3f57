"""The matching family: data, the LambdaRank ranker, ranking metrics and the temporal evaluation.

Training and evaluation use two cutoffs, each a snapshot built only from purchases up to it:
- the evaluation model's features are as of `T − 2h` (h = the 14-day holdout) and its labels
  are the purchases of (T − 2h, T − h];
- it is evaluated with features as of `T − h` against the purchases of the last h days;
- the production model shifts both by h: features as of T − h, labels the last h days, and it
  serves from a snapshot as of T.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from models.executor import Executor, Local
from models.metrics import bootstrap_mean_difference
from models.matching.audience import audience_scores, segment_affinity
from models.matching.config import MatchingConfig
from models.matching.state import SOURCES, MatchingState, Pairs

INTERACTION_COLUMNS = ["member_id", "sku_id", "channel", "units", "revenue", "lines"]


@dataclass
class MatchingData:
    interactions: pd.DataFrame  # dt, member_id, sku_id, channel, units, revenue, lines
    members: pd.DataFrame
    products: pd.DataFrame
    data_date: dt.date
    truth: dict[str, Any] | None = None  # consumers, products, expected units per city × sku (oracle only)


# --- ranking metrics ---------------------------------------------------------------------------------

def ranking_metrics(ranked: list[np.ndarray], relevant: list[set], k: int) -> dict[str, float]:
    """Mean NDCG@k, Recall@k and MAP@k (binary relevance) over members."""
    each = ranking_metrics_each(ranked, relevant, k)
    return {name: float(np.mean(values)) for name, values in each.items()}


def ranking_metrics_each(ranked: list[np.ndarray], relevant: list[set], k: int) -> dict[str, np.ndarray]:
    """NDCG@k, Recall@k and MAP@k of every member with something relevant (in order): what a
    paired comparison of two rankers over the same members needs."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ndcg, recall, ap = [], [], []
    for items, rel in zip(ranked, relevant):
        if not rel:
            continue
        hits = np.array([it in rel for it in items[:k]], dtype=float)
        ideal = discounts[: min(len(rel), k)].sum()
        ndcg.append(float((hits * discounts[: len(hits)]).sum() / ideal))
        recall.append(float(hits.sum() / len(rel)))
        precision_at = np.cumsum(hits) / np.arange(1, len(hits) + 1)
        ap.append(float((precision_at * hits).sum() / min(len(rel), k)))
    return {"ndcg": np.array(ndcg), "recall": np.array(recall), "map": np.array(ap)}


# --- the ranker --------------------------------------------------------------------------------------

def _candidates_and_features(state: MatchingState, batch: np.ndarray) -> tuple[Pairs, np.ndarray]:
    pairs = state.candidates(batch)
    return pairs, state.features(pairs)


def _pairs_for(state: MatchingState, members: np.ndarray, config: MatchingConfig,
               executor: Executor | None = None) -> tuple[Pairs, np.ndarray]:
    """Candidates and features for members, batch by batch where the executor runs them (Ray
    tasks with OnRay, the state in the object store once; this process by default)."""
    batches = [members[i:i + config.training.member_batch] for i in range(0, len(members), config.training.member_batch)]
    results = (executor or Local()).map(_candidates_and_features, state, batches)
    pairs = Pairs(np.concatenate([r[0].member for r in results]), np.concatenate([r[0].item for r in results]),
                  np.concatenate([r[0].source_score for r in results]))
    return pairs, np.concatenate([r[1] for r in results])


def purchases_between(interactions: pd.DataFrame, start: dt.date, end: dt.date) -> pd.DataFrame:
    """Member × SKU purchases with start < dt ≤ end."""
    day = pd.to_datetime(interactions["dt"])
    rows = interactions[(day > pd.Timestamp(start)) & (day <= pd.Timestamp(end)) & (interactions["lines"] > 0)]
    return rows[["member_id", "sku_id", "channel"]].drop_duplicates()


@dataclass
class Ranker:
    names: list[str]
    booster: lgb.Booster

    def score(self, features: np.ndarray) -> np.ndarray:
        return self.booster.predict(features, num_threads=1) if len(features) else np.zeros(0)


def fit_ranker(data: MatchingData, cutoff: dt.date, config: MatchingConfig, progress=lambda line: None,
               executor: Executor | None = None) -> tuple[Ranker, dict[str, float]]:
    """A LambdaRank model from features as of `cutoff` and the purchases of the next holdout_days,
    and, while fewer than `training.min_training_members` members bought in the windows so far, as
    of earlier cutoffs one holdout length apart (up to `training.label_windows`), stacked."""
    horizon = config.evaluation.holdout_days
    parts: list[tuple] = []
    for window in range(config.training.label_windows):
        if sum(len(p[2]) for p in parts) >= config.training.min_training_members:
            break
        rows = _ranker_rows(data, cutoff - dt.timedelta(days=horizon * window), config, executor)
        if rows is not None:
            parts.append(rows)
    if not parts:
        raise ValueError(f"no member bought in the {horizon} days after {cutoff} among the candidates, so the "
                         "ranker has nothing to learn from; the lake needs more members with purchases")
    features = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    groups = np.concatenate([p[2] for p in parts])
    names = parts[0][3]
    progress(f"ranker training set: {len(groups):,} member windows, {len(y):,} candidate rows, "
             f"{int(y.sum()):,} purchases ({len(parts)} label window(s))")
    params = {"verbose": -1, "seed": config.training.seed, "deterministic": True, "num_threads": 2,
              **config.training.params}
    dataset = lgb.Dataset(features, y, group=groups, feature_name=names,
                          categorical_feature=["item_category_code", "item_style_code", "item_availability",
                                               "member_segment_code"])
    booster = lgb.train(params, dataset, config.training.num_boost_round)
    info = {"training_members": float(len(groups)), "training_rows": float(len(y)),
            "training_windows": float(len(parts))}
    return Ranker(names, booster), info


def _ranker_rows(data: MatchingData, cutoff: dt.date, config: MatchingConfig, executor: Executor | None):
    """One label window's training rows: (features, labels, group sizes, feature names) of the
    sampled members who bought in the holdout_days after `cutoff`, or None when none did."""
    horizon = config.evaluation.holdout_days
    state = MatchingState.build(data.interactions, data.members, data.products, cutoff, config.candidates)
    labels = purchases_between(data.interactions, cutoff, cutoff + dt.timedelta(days=horizon))
    buyers = state.member_positions(labels["member_id"].unique())
    buyers = np.sort(buyers[buyers >= 0])
    rng = np.random.default_rng(config.training.seed)
    if len(buyers) > config.training.max_members:
        buyers = np.sort(rng.choice(buyers, size=config.training.max_members, replace=False))
    if not len(buyers):
        return None
    pairs, features = _pairs_for(state, buyers, config, executor)
    n_items = len(state.items)
    label_keys = state.member_positions(labels["member_id"]).astype(np.int64) * n_items + state.item_positions(labels["sku_id"])
    y = np.isin(pairs.member.astype(np.int64) * n_items + pairs.item, label_keys).astype(float)
    # groups must be contiguous (pairs come sorted by member); groups without a purchase teach nothing
    group_sizes = np.bincount(np.searchsorted(buyers, pairs.member), minlength=len(buyers))
    positives = np.bincount(np.searchsorted(buyers, pairs.member), weights=y, minlength=len(buyers))
    keep_group = positives > 0
    if not keep_group.any():
        return None
    keep_row = keep_group[np.searchsorted(buyers, pairs.member)]
    return features[keep_row], y[keep_row], group_sizes[keep_group], state.feature_names()


def rank_members(state: MatchingState, ranker: Ranker, members: np.ndarray, k: int,
                 config: MatchingConfig, executor: Executor | None = None) -> tuple[list[np.ndarray], Pairs]:
    """Top-k item positions per member (members without history: their segment's most popular)."""
    pairs, features = _pairs_for(state, members, config, executor)
    scores = ranker.score(features)
    ranked = top_k_per_member(pairs, scores, members, k)
    fallback = ~state.has_history(members)
    if fallback.any():
        seg = state.members["segment_code"].to_numpy()[members]
        pop = np.where(state.items["available"].to_numpy()[None, :], state.segment_popularity, -1.0)
        for j in np.flatnonzero(fallback):
            ranked[j] = np.argsort(-pop[seg[j]], kind="stable")[:k]
    return ranked, pairs


def top_k_per_member(pairs: Pairs, scores: np.ndarray, members: np.ndarray, k: int) -> list[np.ndarray]:
    order = np.lexsort((-scores, pairs.member))
    member_sorted, item_sorted = pairs.member[order], pairs.item[order]
    starts = np.searchsorted(member_sorted, members, side="left")
    ends = np.searchsorted(member_sorted, members, side="right")
    return [item_sorted[s:min(e, s + k)] for s, e in zip(starts, ends)]


# --- evaluation --------------------------------------------------------------------------------------

@dataclass
class Evaluation:
    metrics: dict[str, float]
    by_activity: pd.DataFrame  # NDCG@k per member activity bucket, model and baselines
    extra: dict[str, Any] = field(default_factory=dict)


def activity_bucket(frequency: np.ndarray) -> np.ndarray:
    edges = [0, 1, 3, 10, 30, np.inf]
    labels = np.array(["0 (new)", "1-2", "3-9", "10-29", "30+"])
    return labels[np.searchsorted(edges, frequency, side="right") - 1]


def evaluate(data: MatchingData, config: MatchingConfig, progress=lambda line: None,
             executor: Executor | None = None) -> Evaluation:
    h = config.evaluation.holdout_days
    k = config.evaluation.k
    end = data.data_date
    cutoff = end - dt.timedelta(days=h)
    ranker, info = fit_ranker(data, cutoff - dt.timedelta(days=h), config, progress, executor)
    state = MatchingState.build(data.interactions, data.members, data.products, cutoff, config.candidates)
    holdout = purchases_between(data.interactions, cutoff, end)
    members = state.member_positions(holdout["member_id"].unique())
    members = np.sort(members[members >= 0])
    rng = np.random.default_rng(config.training.seed + 1)
    if len(members) > config.evaluation.max_members:
        members = np.sort(rng.choice(members, size=config.evaluation.max_members, replace=False))
    ids = state.members["member_id"].to_numpy()
    relevant_by_member = holdout.groupby("member_id")["sku_id"].agg(set)
    relevant = [{p for p in state.item_positions(relevant_by_member.get(ids[m], ())) if p >= 0}
                for m in members]
    ranked, pairs = rank_members(state, ranker, members, k, config, executor)
    progress(f"ranked {len(members):,} holdout members")

    metrics: dict[str, float] = {}
    model = ranking_metrics(ranked, relevant, k)
    metrics.update({f"ndcg_at_{k}": model["ndcg"], f"recall_at_{k}": model["recall"], f"map_at_{k}": model["map"]})
    recommended = np.unique(np.concatenate(ranked)) if ranked else np.array([])
    metrics["catalogue_coverage"] = float(len(recommended) / max(state.items["available"].sum(), 1))

    # candidate recall: share of holdout purchases (of members with history) the candidates contain
    n_items = len(state.items)
    cand_keys = set((pairs.member.astype(np.int64) * n_items + pairs.item).tolist())
    with_history = state.has_history(members)
    hit = total = 0
    per_source = {s: 0 for s in SOURCES}
    source_keys = {s: set((pairs.member[~np.isnan(pairs.source_score[:, j])].astype(np.int64) * n_items
                           + pairs.item[~np.isnan(pairs.source_score[:, j])]).tolist()) for j, s in enumerate(SOURCES)}
    for m, rel, has in zip(members, relevant, with_history):
        if not has:
            continue
        for it in rel:
            key = int(m) * n_items + it
            total += 1
            hit += key in cand_keys
            for s in SOURCES:
                per_source[s] += key in source_keys[s]
    metrics["candidate_recall"] = hit / max(total, 1)
    for s in SOURCES:
        metrics[f"candidate_recall_{s}"] = per_source[s] / max(total, 1)
    metrics["candidates_per_member"] = len(pairs) / max(len(members), 1)

    available = state.items["available"].to_numpy()
    global_top = np.argsort(-np.where(available, state.items["popularity"].to_numpy(), -1.0), kind="stable")[:k]
    popularity = [global_top] * len(members)
    seg = state.members["segment_code"].to_numpy()[members]
    seg_pop = np.where(available[None, :], state.segment_popularity, -1.0)
    seg_top = np.argsort(-seg_pop, axis=1, kind="stable")[:, :k]
    segment = [seg_top[s] for s in seg]
    # recent popularity without what the member already bought: where items are seldom bought twice
    # (films, durables), the baseline a brand would use
    history, order = state.history, popularity_order(state)
    unseen = [order[np.isin(order, history.indices[history.indptr[m]:history.indptr[m + 1]], invert=True)][:k]
              for m in members]
    baselines = {"popularity": popularity, "segment_popularity": segment, "popularity_unseen": unseen}
    oracle = oracle_rankings(data, state, members, cutoff, end, k)
    if oracle is not None:
        baselines["oracle"] = oracle
    each_model = ranking_metrics_each(ranked, relevant, k)["ndcg"]
    best_ndcg = None
    for name, lists in baselines.items():
        if name != "oracle":
            per_member = ranking_metrics_each(lists, relevant, k)["ndcg"]
            if best_ndcg is None or per_member.mean() > best_ndcg.mean():
                best_ndcg = per_member
        res = ranking_metrics(lists, relevant, k)
        metrics[f"ndcg_at_{k}_{name}"] = res["ndcg"]
        metrics[f"recall_at_{k}_{name}"] = res["recall"]
        metrics[f"map_at_{k}_{name}"] = res["map"]
        metrics[f"catalogue_coverage_{name}"] = float(len(np.unique(np.concatenate(lists))) / max(available.sum(), 1))

    if best_ndcg is not None and len(each_model):
        # the ranker against the best popularity ranking, paired over the same holdout members
        low, high = bootstrap_mean_difference(each_model, best_ndcg, seed=config.training.seed)
        metrics.update({f"ndcg_at_{k}_diff_best_baseline": float(each_model.mean() - best_ndcg.mean()),
                        f"ndcg_at_{k}_diff_best_baseline_ci_low": low, f"ndcg_at_{k}_diff_best_baseline_ci_high": high})
    buckets = activity_bucket(state.members["frequency"].to_numpy()[members])
    rows = []
    for b in sorted(set(buckets), key=lambda x: ["0 (new)", "1-2", "3-9", "10-29", "30+"].index(x)):
        idx = np.flatnonzero(buckets == b)
        row = {"bucket": b, "members": len(idx),
               "model": ranking_metrics([ranked[j] for j in idx], [relevant[j] for j in idx], k)["ndcg"]}
        for name, lists in baselines.items():
            row[name] = ranking_metrics([lists[j] for j in idx], [relevant[j] for j in idx], k)["ndcg"]
        rows.append(row)
    audience = evaluate_audience(state, ranker, holdout, cutoff, config)
    metrics.update(audience)
    metrics.update(info)
    metrics["holdout_members"] = float(len(members))
    # what the registered model serves: the ranker, unless a popularity ranking beat it on this holdout
    scores = {name: metrics[key.format(k=k)] for name, key in SERVED.items() if key.format(k=k) in metrics}
    served = max(scores, key=lambda name: (scores[name], name == "ranker"))
    metrics["served_ranker"] = float(served == "ranker")
    return Evaluation(metrics, pd.DataFrame(rows), {"ranker": ranker, "served": served})


SERVED = {"ranker": "ndcg_at_{k}", "popularity": "ndcg_at_{k}_popularity",
          "popularity_unseen": "ndcg_at_{k}_popularity_unseen"}
"""The rankings a registered model may serve, and the holdout metric that chooses between them."""


def popularity_order(state: MatchingState) -> np.ndarray:
    """The available items, most popular (recent popularity) first: sorted once per snapshot."""
    available = state.items["available"].to_numpy()
    order = np.argsort(-np.where(available, state.items["popularity"].to_numpy(), -1.0), kind="stable")
    return order[available[order]]


def true_affinity(consumers: pd.DataFrame, params: dict) -> np.ndarray:
    """Each consumer's true affinity for each product combo (category × price band × style, the
    order of truth/products' `combo`), from the hidden preferences the generator wrote to
    truth/consumers and the formula and weights in truth/params/world.json ("affinity")."""
    def codes(column: str, names: list[str]) -> np.ndarray:
        return consumers[column].map({v: i for i, v in enumerate(names)}).to_numpy()

    n, rows = len(consumers), np.arange(len(consumers))
    category = np.asarray(params["age_category_pref"], dtype=float)[codes("age_band", params["age_bands"])]
    category[rows, codes("fav_category_1", params["categories"])] *= params["favourite_category_boost"]
    category[rows, codes("fav_category_2", params["categories"])] *= params["favourite_category_boost"] / 2
    band = np.asarray(params["sensitivity_band_pref"], dtype=float)[codes("price_sensitivity", params["sensitivities"])]
    style = np.ones((n, len(params["styles"])))
    style[rows, codes("fav_style", params["styles"])] = params["favourite_style_boost"]
    return (category[:, :, None, None] * band[:, None, :, None] * style[:, None, None, :]).reshape(n, -1)


def oracle_rankings(data: MatchingData, state: MatchingState, members: np.ndarray, cutoff: dt.date, end: dt.date,
                    k: int) -> list[np.ndarray] | None:
    """With truth/: rank every available SKU by the true purchase intensity of the member —
    affinity(member, SKU's combo) × the SKU's true expected units in the member's city over the
    holdout / the city's total affinity mass for that combo (how the generator draws buyers)."""
    if data.truth is None or "channel_weight" not in data.truth["params"]:  # lakes generated before it was written
        return None
    params = data.truth["params"]
    consumers = data.truth["consumers"]
    expected = data.truth.get("expected_demand")
    if expected is None:
        return None
    expected = expected[(expected["dt"] > cutoff) & (expected["dt"] <= end)]
    if expected.empty:
        return None
    units = expected.groupby(["city", "sku_id"])["expected_units"].sum()
    truth_products = data.truth["products"].set_index("sku_id")
    aff = true_affinity(consumers, params)  # (consumers, combos)
    pref = consumers["channel_pref"].map({p: i for i, p in enumerate(params["channel_prefs"])}).to_numpy()
    mass = consumers["activity"].to_numpy() * np.asarray(params["channel_weight"])[pref].sum(axis=1)
    item_ids = state.items["sku_id"].to_numpy()
    combo = truth_products["combo"].reindex(item_ids).to_numpy()
    available = state.items["available"].to_numpy() & ~np.isnan(combo)
    combo = np.nan_to_num(combo).astype(int)
    by_member = pd.Series(np.arange(len(consumers)), index=consumers["member_id"])
    by_member = by_member[by_member.index.notna()]
    out = []
    cities = consumers["city"].to_numpy()
    city_mass = {c: (aff[cities == c] * mass[cities == c, None]).sum(axis=0) for c in np.unique(cities)}
    ids = state.members["member_id"].to_numpy()
    for m in members:
        row = by_member.get(ids[m])
        if row is None:
            out.append(np.array([], dtype=int))
            continue
        city = cities[row]
        u = units.get(city, pd.Series(dtype=float)).reindex(item_ids).fillna(0.0).to_numpy()
        score = aff[row, combo] * u / np.maximum(city_mass[city][combo], 1e-12)
        score = np.where(available, score, -1.0)
        out.append(np.argsort(-score, kind="stable")[:k])
    return out


def evaluate_audience(state: MatchingState, ranker: Ranker, holdout: pd.DataFrame, cutoff: dt.date,
                      config: MatchingConfig) -> dict[str, float]:
    """For SKUs new at the cutoff (launched within new_arrival_days, or planned inside the
    holdout) with enough holdout buyers: AUC of the members who bought them, scored by the
    audience model and by segment popularity of the SKU's category and price band."""
    items = state.items
    new = np.flatnonzero(items["available"].to_numpy() & (items["age_days"].to_numpy() <= config.candidates.new_arrival_days))
    buyers = holdout.groupby("sku_id")["member_id"].agg(set)
    ids = state.members["member_id"].to_numpy()
    model_auc, base_auc = [], []
    for i in new:
        bought = buyers.get(items["sku_id"].iat[i], set())
        y = np.isin(ids, list(bought))
        if y.sum() < config.evaluation.audience_min_buyers:
            continue
        scores = audience_scores(state, ranker, state.items.iloc[[i]], prefilter=None)
        model_auc.append(_auc(y, scores))
        base_auc.append(_auc(y, segment_affinity(state, state.items.iloc[[i]])))
    if not model_auc:
        return {}
    return {"audience_auc_new_sku": float(np.mean(model_auc)),
            "audience_auc_new_sku_segment_popularity": float(np.mean(base_auc)), "audience_new_skus": float(len(model_auc))}


def _auc(y: np.ndarray, score: np.ndarray) -> float:
    ranks = pd.Series(score).rank(method="average").to_numpy()
    pos = y.sum()
    neg = len(y) - pos
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg)) if pos and neg else float("nan")
