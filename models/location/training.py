"""The location family's training (models/training.py), run by the generic job jobs/train.py:

1. the inputs: candidate sites, stores, members, online purchases and store performance (and
   truth/stores when the lake has it: the oracle, for evaluation only);
2. build the training table: one row per trading offline store, its site's features computed
   without its own outcome;
3. spatial cross-validation (whole cities per fold, one task per fold): the model, the population
   and gravity baselines and the oracle on the same stores;
4. fit the production model on every store, score every candidate site, estimate cannibalisation
   from the brand's openings and closings;
5. hand back the recommender (model + candidate-site snapshot + own-store snapshot), metrics
   (spearman, spearman_population_baseline, spearman_gravity_baseline, spearman_oracle,
   ndcg_at_10, …) and plots.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd

from lake.store import LakeError
from models.executor import Executor
from models.plots import feature_importance
from models.location.cannibalisation import CannibalisationEstimate
from models.location.cannibalisation import estimate as estimate_cannibalisation
from models.location.config import LocationConfig
from models.location.data import LocationData, training_table
from models.location.features import extra_area_columns, member_areas, site_features
from models.location.model import TARGET, Evaluation, SiteModel, evaluate
from models.location.recommender import SiteRecommender
from models.report import Report
from models.training import Input, Trained

MEMBER_WINDOW_MARGIN_DAYS = 31
HEADLINE = ("spearman", "spearman_population_baseline", "spearman_gravity_baseline", "spearman_oracle", "ndcg_at_10")


def inputs(config: LocationConfig, holdout: bool = False) -> dict[str, Input]:
    return {"sites": Input("raw", "candidate_sites", contract=True,
                           needed="the location family needs the brand's candidate sites"),
            "stores": Input("raw", "stores", contract=True, needed="the location family needs the brand's stores"),
            "performance": Input("curated", "store_performance", needed="run quanyu data merge first"),
            "members": Input("raw", "members", ("member_id", "home_cell"), contract=True),
            # the member window ends at the last day with store sales (prepare cuts it exactly); the
            # lake's last day, where this read ends, may come later (days of online sales only)
            "interactions": Input("curated", "interactions", ("dt", "member_id", "channel", "revenue"),
                                  days=config.features.member_days + MEMBER_WINDOW_MARGIN_DAYS),
            "daily": Input("curated", "store_daily", ("dt", "store_id", "channel", "revenue_net")),
            "truth": Input("truth", "stores", ("store_id", "true_level"))}


def prepare(frames: dict, config: LocationConfig) -> LocationData:
    """Raises LakeError when the brand has no offline store to learn from."""
    performance = frames["performance"]
    if performance.empty:
        raise LakeError("curated/store_performance has no offline store: the location model learns from "
                        "the brand's own stores and needs at least a few")
    data_date = pd.to_datetime(performance["last_dt"]).max().date()
    sites = frames["sites"].drop_duplicates("site_id").reset_index(drop=True)
    stores = frames["stores"]
    stores = stores[stores["channel"] == "offline"].reset_index(drop=True)
    online = None
    bought = frames["interactions"]
    if bought is not None:  # online purchases of the member window before the data date
        bought = bought[(bought["dt"] > data_date - dt.timedelta(days=config.features.member_days))
                        & (bought["channel"] == "online")]
        online = bought.groupby("member_id", as_index=False)["revenue"].sum()
    daily = frames["daily"]
    if daily is not None:
        daily = daily[daily["channel"] == "offline"].drop(columns="channel")
    settings = getattr(frames, "settings", None)  # the catalogue's frames carry the lake's settings
    return LocationData(sites, stores, performance, frames["members"], online, data_date, daily, frames["truth"],
                        settings.currency if settings is not None else None)


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
    model = SiteModel.from_config(config, extra).fit(table, smearing=smearing)
    trading = data.trading_stores()
    features = site_features(data.sites, member_areas(data.members, data.online, data.sites), trading,
                             config.features, extra)
    features[["lat", "lon"]] = data.sites[["lat", "lon"]].to_numpy()
    revenue = data.performance.set_index("store_id")[TARGET]
    stores = trading[["store_id", "city", "lat", "lon", "format"]].assign(
        revenue_annualised=trading["store_id"].map(revenue).fillna(0.0).to_numpy())
    return SiteRecommender(model, features, stores, config, {"data_date": str(data.data_date), **(meta or {})})


def holdout(data: LocationData, config: LocationConfig, executor: Executor) -> Report:
    """The spatial cross-validation of `config`, without fitting the production model."""
    table = training_table(data, config.features, config.training.min_trading_days)
    evaluation = evaluate(table, data.sites, config, data.truth, extra_area_columns(data.sites), executor)
    return Report(evaluation.metrics, {"cv_predictions": evaluation.predictions})


def train(data: LocationData, config: LocationConfig, executor: Executor, folder: Path, say) -> Trained:
    from models.location.pyfunc import LocationPyfunc

    table = training_table(data, config.features, config.training.min_trading_days)
    say(f"{len(table)} trading stores in {table['city'].nunique()} cities, {len(data.sites):,} candidate sites")
    evaluation = evaluate(table, data.sites, config, data.truth, extra_area_columns(data.sites), executor)
    say(f"spatial CV over {evaluation.folds} folds: spearman {evaluation.metrics['spearman']:.3f}")
    metrics = Report(evaluation.metrics).finite
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
                                     **({"currency": data.currency} if data.currency else {})})
    say(f"scored {len(recommender.sites):,} candidate sites")
    return Trained(origin=data.data_date, report=Report(metrics, {"cv_predictions": evaluation.predictions}),
                   params={"training_stores": len(table), "candidate_sites": len(data.sites),
                           "cities": int(table["city"].nunique())},
                   tags={"data_date": str(data.data_date)}, python_model=LocationPyfunc(),
                   artifacts={"recommender": str(recommender.save(folder / "recommender"))},
                   learned_from=[("store_performance", data.performance, "curated"),
                                 ("candidate_sites", data.sites, "raw")],
                   files=_plots(evaluation, recommender, folder),
                   example=pd.DataFrame({"site_id": recommender.sites["site_id"].head(2).astype(str)}),
                   packages=("scipy", "h3"))
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
    return [*paths, feature_importance(recommender.model.booster_, "Location model: feature importance",
                                       folder / "feature_importance.png", top=20, height=6)]
