"""The site model: a LightGBM regressor of a store's log annualised revenue from its site's
features, its format and its age, and its spatial cross-validation against baselines.

Log target: revenue spans two orders of magnitude across cities and formats, and errors are
multiplicative. Predictions go back to CNY with Duan's smearing factor (the mean of exp(residual)
over the out-of-fold residuals), so predicted revenues are unbiased in CNY, not only in rank.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import lightgbm as lgb
import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from models.executor import Executor, Local
from models.location.config import EvaluationConfig, LocationConfig
from models.location.features import FORMATS, local_km, neighbourhood_pairs

TARGET = "revenue_annualised"


def design(table: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """The model's input matrix: float columns in `names` order, format as its category code."""
    frame = table.reindex(columns=names).copy()
    frame["format"] = pd.Categorical(table["format"], categories=FORMATS).codes.astype(float)
    frame.loc[frame["format"] < 0, "format"] = np.nan
    return frame.astype(float)


@dataclass
class SiteModel:
    names: list[str]
    params: dict
    num_boost_round: int
    seed: int
    booster_: lgb.Booster | None = None
    smearing_: float = 1.0

    @classmethod
    def from_config(cls, config: LocationConfig, extra: tuple[str, ...] = ()) -> "SiteModel":
        t = config.training
        return cls(config.features.names(extra), dict(t.params), t.num_boost_round, t.seed)

    def fit(self, table: pd.DataFrame, smearing: float = 1.0) -> "SiteModel":
        """Fit on the stores' log revenue; `smearing` (the cross-validation's Duan factor, the mean
        of exp(out-of-fold residual)) takes predictions back from log revenue to revenue."""
        if len(table) < 3:
            raise ValueError(f"the location model needs at least 3 trading stores with history, found {len(table)}")
        params = {"verbose": -1, "seed": self.seed, "deterministic": True, "num_threads": 1,
                  "min_data_in_bin": 1, "max_bin": 63, **self.params}
        data = lgb.Dataset(design(table, self.names), np.log(table[TARGET].to_numpy(float).clip(min=1.0)),
                           categorical_feature=["format"], params={k: params[k] for k in ("min_data_in_bin", "max_bin", "verbose")})
        self.booster_ = lgb.train(params, data, self.num_boost_round)
        self.smearing_ = smearing
        return self

    def predict_log(self, table: pd.DataFrame) -> np.ndarray:
        return self.booster_.predict(design(table, self.names))

    def predict(self, table: pd.DataFrame) -> np.ndarray:
        """Expected annualised revenue, CNY."""
        return np.exp(self.predict_log(table)) * self.smearing_

    def contributions(self, table: pd.DataFrame) -> pd.DataFrame:
        """Per-feature contributions to the log revenue (SHAP values), one column per feature."""
        values = self.booster_.predict(design(table, self.names), pred_contrib=True)
        return pd.DataFrame(values[:, :-1], columns=self.names, index=table.index)


def spatial_folds(table: pd.DataFrame, config: EvaluationConfig) -> np.ndarray:
    """Fold number per row: whole groups (cities, or coarse H3 cells) go to one fold, so a fold
    is predicted by a model that never saw its area."""
    if config.group_by == "city":
        groups = table["city"].to_numpy()
    else:
        import h3

        groups = np.array([h3.cell_to_parent(s, config.cell_resolution) if h3.is_valid_cell(s) else c
                           for s, c in zip(table["site_id"], table["city"])])
    unique = np.unique(groups)
    rng = np.random.default_rng(0)
    rng.shuffle(unique)
    k = min(config.folds, len(unique))
    if k < 2:
        raise ValueError(f"spatial cross-validation needs at least 2 {config.group_by} groups; the lake has {len(unique)}")
    fold_of = {g: i % k for i, g in enumerate(unique)}
    return np.array([fold_of[g] for g in groups])


def gravity_scores(sites: pd.DataFrame, config: EvaluationConfig) -> pd.Series:
    """A Huff-style baseline per candidate site: the people around it (residents and daytime)
    weighted by the share a new store would draw against the competitors near them:
    Σ_c traffic_c · f(d_sc) / (f(d_sc) + Σ_c' competitors_c' · f(d_cc')), f(d) = exp(−d/decay)."""
    out = pd.Series(0.0, index=sites.index)
    for _, group in sites.groupby("city", sort=False):
        xy = local_km(group["lat"].to_numpy(float), group["lon"].to_numpy(float),
                      float(group["lat"].median()), float(group["lon"].median()))
        rows, cols, dist = neighbourhood_pairs(xy, config.gravity_radius_km)
        f = np.exp(-dist / config.gravity_decay_km)
        competitors = np.nan_to_num(group["competitors"].to_numpy(float))
        field_ = np.bincount(rows, weights=competitors[cols] * f, minlength=len(group))
        traffic = np.nan_to_num(group["population"].to_numpy(float) + group["daytime_population"].to_numpy(float))
        share = f / (f + field_[cols])
        out.loc[group.index] = np.bincount(rows, weights=traffic[cols] * share, minlength=len(group))
    return out


def ndcg_at(actual: np.ndarray, score: np.ndarray, k: int) -> float:
    """NDCG@k with the actual revenue's rank as gain (n − rank, so scale does not matter)."""
    n = len(actual)
    if n == 0:
        return float("nan")
    gain = pd.Series(actual).rank(method="average").to_numpy()  # 1 … n
    order = np.argsort(-score, kind="stable")[:k]
    discounts = 1.0 / np.log2(np.arange(2, min(k, n) + 2))
    dcg = float((gain[order] * discounts[: len(order)]).sum())
    ideal = float((np.sort(gain)[::-1][:k] * discounts[: min(k, n)]).sum())
    return dcg / ideal if ideal > 0 else float("nan")


def ranking_metrics(table: pd.DataFrame, score: np.ndarray, k: int) -> tuple[float, float, float]:
    """(within-city Spearman averaged over cities, weighted by their stores; pooled Spearman;
    within-city NDCG@k averaged the same way). Cities with fewer than 3 stores are left out of
    the within-city means."""
    actual = table[TARGET].to_numpy(float)
    rhos, ndcgs, weights = [], [], []
    for _, idx in table.groupby("city").indices.items():
        if len(idx) < 3:
            continue
        constant = np.ptp(score[idx]) == 0 or np.ptp(actual[idx]) == 0
        rhos.append(0.0 if constant else float(spearmanr(score[idx], actual[idx]).statistic))
        ndcgs.append(ndcg_at(actual[idx], score[idx], k))
        weights.append(len(idx))
    pooled = float(spearmanr(score, actual).statistic) if len(table) >= 3 else float("nan")
    if not weights:
        return float("nan"), pooled, float("nan")
    return float(np.average(rhos, weights=weights)), pooled, float(np.average(ndcgs, weights=weights))


@dataclass
class Evaluation:
    metrics: dict[str, float]
    predictions: pd.DataFrame  # store rows with out-of-fold prediction and the baselines' scores
    smearing: float
    folds: int
    scores: dict[str, np.ndarray] = field(default_factory=dict)


def evaluate(table: pd.DataFrame, sites: pd.DataFrame, config: LocationConfig,
             truth: pd.DataFrame | None = None, extra: tuple[str, ...] = (),
             executor: Executor | None = None) -> Evaluation:
    """Spatial cross-validation of the model and, on the same stores, the baselines: population
    of the site's cell, the gravity score, and (with truth) the oracle ranking by the true level
    of the store (site potential × format factor). The folds are fitted where `executor` says
    (one Ray task per fold with OnRay, the table in the object store once; this process by default)."""
    folds = spatial_folds(table, config.evaluation)
    oof = np.zeros(len(table))
    fold_ids = [int(f) for f in np.unique(folds)]
    fitted = (executor or Local()).map(_fold_predictions, (table, folds, config, extra), fold_ids)
    for f, predicted in zip(fold_ids, fitted):
        oof[folds == f] = predicted
    residual = np.log(table[TARGET].to_numpy(float).clip(min=1.0)) - oof
    smearing = float(np.mean(np.exp(residual)))
    gravity = gravity_scores(sites, config.evaluation)
    gravity = pd.Series(gravity.to_numpy(), index=sites["site_id"]).reindex(table["site_id"]).to_numpy()
    scores = {"": oof, "_population_baseline": table["population"].to_numpy(float),
              "_gravity_baseline": gravity}
    if truth is not None:
        level = table["store_id"].map(truth.set_index("store_id")["true_level"])
        if level.notna().all():
            scores["_oracle"] = level.to_numpy(float)
    k = config.evaluation.ndcg_k
    metrics: dict[str, float] = {}
    for suffix, score in scores.items():
        within, pooled, ndcg = ranking_metrics(table, score, k)
        metrics[f"spearman{suffix}"] = within
        metrics[f"spearman_pooled{suffix}"] = pooled
        metrics[f"ndcg_at_{k}{suffix}"] = ndcg
    predicted = np.exp(oof) * smearing
    actual = table[TARGET].to_numpy(float)
    metrics["mape"] = float(np.mean(np.abs(predicted - actual) / actual))
    metrics["stores"] = float(len(table))
    metrics["folds"] = float(len(np.unique(folds)))
    out = table[["store_id", "city", "site_id", "format", TARGET]].assign(
        predicted=predicted, fold=folds, gravity=gravity)
    return Evaluation(metrics, out, smearing, int(len(np.unique(folds))), scores)


def _fold_predictions(shared: tuple, fold: int) -> np.ndarray:
    """One fold's out-of-fold log predictions; `shared`: (table, folds, config, extra columns)."""
    table, folds, config, extra = shared
    held_out = folds == fold
    return SiteModel.from_config(config, extra).fit(table[~held_out]).predict_log(table[held_out])

