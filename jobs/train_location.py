"""Job: train the location family and register a candidate version.

Steps:
1. read candidate sites, stores, members, online purchases and store performance from the lake
   (and truth/stores when the lake has it: the oracle, for evaluation only);
2. build the training table: one row per trading offline store, its site's features computed
   without its own outcome;
3. spatial cross-validation (whole cities per fold, one Ray task per fold): the model, the
   population and gravity baselines and the oracle on the same stores;
4. fit the production model on every store, score every candidate site;
5. log params, metrics (spearman, spearman_population_baseline, spearman_gravity_baseline,
   spearman_oracle, ndcg_at_10, …), dataset digests and plots to MLflow;
6. register `quanyu-location` (model + candidate-site snapshot + own-store snapshot) and point
   the alias `candidate` at it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pandas as pd

from jobs.runtime import executor
from jobs.tracking import TrainResult, family_run, log_inputs, register
from lake.store import Lake
from models.location.cannibalisation import CannibalisationEstimate
from models.location.cannibalisation import estimate as estimate_cannibalisation
from models.location.config import LocationConfig
from models.location.data import LocationData, read_location_data, training_table
from models.location.features import extra_area_columns, member_areas, site_features
from models.location.model import TARGET, Evaluation, SiteModel, evaluate
from models.location.recommender import SiteRecommender

HEADLINE = ("spearman", "spearman_population_baseline", "spearman_gravity_baseline", "spearman_oracle", "ndcg_at_10")


def with_estimated_cannibalisation(data: LocationData, config: LocationConfig
                                   ) -> tuple[LocationConfig, CannibalisationEstimate | None]:
    """The config with the share model's strength and decay estimated from the brand's openings
    and closings, when asked for and when the lake has enough of them; else the config as given."""
    prior = config.recommender.cannibalisation
    if not prior.estimate or data.daily is None or data.daily.empty:
        return config, None
    found = estimate_cannibalisation(data.stores, data.daily, prior.min_observations)
    if found is None:
        return config, None
    fitted = prior.model_copy(update={"strength": found.strength, "decay_km": found.decay_km})
    return config.model_copy(update={"recommender": config.recommender.model_copy(
        update={"cannibalisation": fitted})}), found


def build_recommender(data: LocationData, table: pd.DataFrame, config: LocationConfig, smearing: float,
                      meta: dict | None = None) -> SiteRecommender:
    """Fit the production model on every store and score every candidate site with it."""
    extra = extra_area_columns(data.sites)
    model = SiteModel.from_config(config, extra).fit(table)
    model.smearing_ = smearing
    trading = data.trading_stores()
    features = site_features(data.sites, member_areas(data.members, data.online, data.sites), trading,
                             config.features, extra)
    features[["lat", "lon"]] = data.sites[["lat", "lon"]].to_numpy()
    revenue = data.performance.set_index("store_id")[TARGET]
    stores = trading[["store_id", "city", "lat", "lon", "format"]].assign(
        revenue_annualised=trading["store_id"].map(revenue).fillna(0.0).to_numpy())
    return SiteRecommender(model, features, stores, config, {"data_date": str(data.data_date), **(meta or {})})


def _plots(evaluation: Evaluation, recommender: SiteRecommender, folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = evaluation.predictions
    fig, ax = plt.subplots(figsize=(6.5, 6))
    for fmt, rows in p.groupby("format"):
        ax.scatter(rows[TARGET] / 1e6, rows["predicted"] / 1e6, s=12, alpha=0.7, label=fmt)
    top = float(max(p[TARGET].max(), p["predicted"].max())) / 1e6
    ax.plot([0.01, top], [0.01, top], "k:", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    currency = recommender.meta["currency"]
    ax.set_xlabel(f"actual annualised revenue, M {currency}")
    ax.set_ylabel(f"predicted (out of fold), M {currency}")
    ax.set_title(f"Location model, spatial CV: Spearman {evaluation.metrics['spearman']:.2f} within cities")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths = [folder / "predicted_vs_actual.png"]
    fig.savefig(paths[0], dpi=110)
    plt.close(fig)
    booster = recommender.model.booster_
    gain = pd.Series(booster.feature_importance("gain"), index=booster.feature_name()).sort_values().tail(20)
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.barh(gain.index, gain.to_numpy() / max(gain.sum(), 1e-12))
    ax.set_xlabel("share of total gain")
    ax.set_title("Location model: feature importance")
    fig.tight_layout()
    paths.append(folder / "feature_importance.png")
    fig.savefig(paths[1], dpi=110)
    plt.close(fig)
    return paths


def holdout_metrics(config: LocationConfig, lake: Lake) -> dict[str, float]:
    """The spatial cross-validation's metrics of `config` on the lake, without fitting the
    production model or logging: how the retrain's gate re-scores a champion's recipe."""
    data = read_location_data(lake, config.features.member_days)
    table = training_table(data, config.features, config.training.min_trading_days)
    evaluation = evaluate(table, data.sites, config, data.truth, extra_area_columns(data.sites), executor())
    return {k: v for k, v in evaluation.metrics.items() if v == v}


def main(config: LocationConfig, lake: Lake, tracking_uri: str, config_path: str | None = None,
         artifact_root: str | None = None, run_tags: dict | None = None) -> TrainResult:
    """Train, evaluate, log and register; Ray should be initialised (folds run as tasks)."""
    import mlflow

    from models.location.pyfunc import LocationPyfunc

    started = time.monotonic()

    def say(line: str) -> None:
        print(f"train location: {line} [{time.monotonic() - started:.0f} s]", file=sys.stderr, flush=True)

    data = read_location_data(lake, config.features.member_days)
    table = training_table(data, config.features, config.training.min_trading_days)
    say(f"{len(table)} trading stores in {table['city'].nunique()} cities, {len(data.sites):,} candidate sites")
    evaluation = evaluate(table, data.sites, config, data.truth, extra_area_columns(data.sites), executor())
    say(f"spatial CV over {evaluation.folds} folds: spearman {evaluation.metrics['spearman']:.3f}")
    metrics = {k: v for k, v in evaluation.metrics.items() if v == v}
    config, found = with_estimated_cannibalisation(data, config)
    share = config.recommender.cannibalisation
    if found is not None:
        metrics.update({"cannibalisation_events": float(found.events), "cannibalisation_rmse": found.rmse,
                        "cannibalisation_rmse_no_effect": found.rmse_without})
        say(f"cannibalisation from {found.events} openings/closings: strength {share.strength}, "
            f"decay {share.decay_km} km")
    else:
        say(f"cannibalisation: too few openings/closings to estimate; the prior (strength {share.strength}, "
            f"decay {share.decay_km} km) stays")
    metrics.update({"cannibalisation_strength": share.strength, "cannibalisation_decay_km": share.decay_km})
    recommender = build_recommender(data, table, config, evaluation.smearing,
                                    {**{k: metrics[k] for k in HEADLINE if k in metrics},
                                     "currency": lake.settings().currency})
    say(f"scored {len(recommender.sites):,} candidate sites")

    tags = {"lake": str(lake.root), "data_date": str(data.data_date), "config_path": config_path or "defaults"}
    params = {"training_stores": len(table), "candidate_sites": len(data.sites), "cities": int(table["city"].nunique())}
    tags.update(run_tags or {})  # e.g. the daily retrain's parent run
    with family_run("location", tracking_uri, artifact_root, f"location {data.data_date}", config, tags, params,
                    metrics) as (run, folder):
        log_inputs(lake, [("store_performance", data.performance, "curated"), ("candidate_sites", data.sites, "raw")])
        for path in _plots(evaluation, recommender, folder):
            mlflow.log_artifact(str(path), artifact_path="plots")
        evaluation.predictions.to_csv(folder / "cv_predictions.csv", index=False)
        mlflow.log_artifact(str(folder / "cv_predictions.csv"))
        example = pd.DataFrame({"site_id": recommender.sites["site_id"].head(2).astype(str)})
        version = register("location", LocationPyfunc(), {"recommender": str(recommender.save(folder / "recommender"))},
                           example, ("scipy", "h3"))
    return TrainResult(run_id=run.info.run_id, version=version, metrics=metrics, origin=data.data_date,
                       seconds=round(time.monotonic() - started, 1))
