"""The demand family's training (models/training.py), run by the generic job jobs/train.py:

1. the inputs: curated demand_daily and the dimension tables (and truth/ when the lake has it:
   the oracle's expected demand of the days the evaluation scores, for evaluation only);
2. evaluate on rolling origins — the model, seasonal naive, the 28-day moving average and the
   oracle on the same holdout rows;
3. fit the production model on everything up to the last day, blend it with the baselines the
   backtest chose and calibrate its P10/P90 on every origin's residuals;
4. hand back the forecaster, metrics (wrmsse, wrmsse_seasonal_naive, wrmsse_moving_average,
   wrmsse_oracle, wape, interval_coverage_p10_p90, …), params and plots.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from models.demand import blend as blending
from models.demand.config import DemandConfig
from models.demand.evaluate import Evaluation, evaluate
from models.demand.features import DATE_OF_YEAR
from models.demand.forecaster import DemandData, DemandForecaster
from models.executor import Executor
from models.plots import feature_importance
from models.report import Report
from models.training import Input, Trained

DEMAND_COLUMNS = ("dt", "store_id", "sku_id", "units_sold", "revenue_net", "list_price", "offer_discount_pct")
MERGE_FIRST = "run quanyu data merge first (or choose a later --as-of)"


def evaluated_days(config: DemandConfig) -> int:
    """How many of the lake's last days the rolling-origin evaluation scores."""
    return config.evaluation.days_scored(config.features.horizon)


def inputs(config: DemandConfig, holdout: bool = False) -> dict[str, Input]:
    # store and SKU ids as categoricals: as strings they are 44 bytes a row (3 GB at medium scale,
    # copied again by every filter); as codes, 4. A brand without a calendar or promotions has no
    # events and no promotions. The oracle: only the days the evaluation scores (all of truth is
    # as large as the demand itself, 2 GB more at medium scale).
    return {"demand": Input("curated", "demand_daily", DEMAND_COLUMNS, needed=MERGE_FIRST, categorical=True),
            **{t: Input("raw", t, contract=True) for t in ("products", "stores", "calendar", "promotions", "prices")},
            "truth": Input("truth", "expected_demand", ("dt", "store_id", "sku_id", "expected_units"),
                           days=evaluated_days(config)),
            "truth_products": Input("truth", "products")}


def prepare(frames: dict, config: DemandConfig) -> tuple[DemandData, pd.DataFrame | None]:
    """The demand data and the oracle's expected demand (None without truth/)."""
    from lake.contract import RAW_TABLES, empty

    def table(name: str) -> pd.DataFrame:
        found = frames[name]
        return found if found is not None else empty(RAW_TABLES[name]).to_pandas()

    data = DemandData(demand=frames["demand"], products=frames["products"], stores=frames["stores"],
                      calendar=table("calendar"), promotions=table("promotions"), prices=frames["prices"])
    truth = frames["truth"]
    if truth is not None and not truth.empty:
        truth = truth.groupby(["dt", "store_id", "sku_id"], as_index=False)["expected_units"].sum()
        if frames["truth_products"] is not None:
            truth = with_attribute_oracle(truth, frames["truth_products"])
    else:
        truth = None
    return data, truth


def with_attribute_oracle(truth: pd.DataFrame, true_products: pd.DataFrame) -> pd.DataFrame:
    """Adds `expected_units_attributes`: the generator's expected demand with each SKU's hidden
    popularity replaced by the mean popularity of the SKUs that share its attributes (category ×
    price band × style, the generator's `combo`). It is the best forecast of a product that
    has not sold yet: it knows everything the oracle knows except what only sales reveal."""
    popularity = true_products.set_index("sku_id")["true_popularity"]
    expected = true_products.groupby("combo")["true_popularity"].transform("mean").set_axis(true_products["sku_id"])
    ratio = (expected / popularity).reindex(truth["sku_id"]).to_numpy()
    return truth.assign(expected_units_attributes=truth["expected_units"].to_numpy() * ratio)


def holdout(prepared, config: DemandConfig, executor: Executor) -> Report:
    """The rolling-origin holdout of `config`, without fitting the production model (its rows,
    as large as the holdout days of every series, are not kept)."""
    data, truth = prepared
    evaluation, _ = evaluate(data, config, truth, executor=executor)
    return Report(evaluation.metrics)


def train(prepared, config: DemandConfig, executor: Executor, folder: Path, say) -> Trained:
    from models.demand.pyfunc import DemandPyfunc

    data, truth = prepared
    say(f"read {len(data.demand):,} demand rows")
    evaluation, _ = evaluate(data, config, truth, progress=say, executor=executor)
    forecaster = DemandForecaster(config).fit(data, executor=executor).blend(evaluation.blend_weights)
    mixes = {s: "/".join(f"{w:g}" for w in blending.as_mix(m)) for s, m in evaluation.blend_weights.items()}
    say(f"fitted the production model up to {forecaster.origin_} ({forecaster.layout_.describe()}); mix of "
        f"model / 28-day moving average / TSB by level segment: {mixes or 'the model alone'}")
    if evaluation.residuals:  # the bands: every backtest origin's residuals, pooled
        forecaster.calibrate(*(np.concatenate(parts) for parts in zip(*evaluation.residuals)))
    first, last_day = min(data.demand["dt"]), max(data.demand["dt"])
    params = {"training_rows": forecaster.training_rows_, "origins": ",".join(str(o.origin) for o in evaluation.origins),
              "blend_weights": json.dumps(evaluation.blend_weights),
              "sized_min_data_in_leaf": forecaster.params_["min_data_in_leaf"],
              "sized_num_leaves": forecaster.params_["num_leaves"],
              "date_of_year_features": any(c in forecaster.features_order_ for c in DATE_OF_YEAR),
              "best_baseline": evaluation.best_baseline}
    (folder / "config.json").write_text(config.model_dump_json(indent=1))
    return Trained(origin=forecaster.origin_, report=Report(evaluation.metrics),
                   params=params, tags={"lake_first_dt": str(first), "lake_last_dt": str(last_day),
                                        "layout": forecaster.layout_.describe()},
                   python_model=DemandPyfunc(), artifacts={"forecaster": str(forecaster.save(folder / "forecaster"))},
                   learned_from=[("demand_daily", data.demand, "curated")],
                   files=[*_plots(evaluation, forecaster, folder), folder / "config.json"])


def _plots(evaluation: Evaluation, forecaster: DemandForecaster, folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    last = evaluation.origins[-1].holdout
    top = last.assign(revenue=last["units_sold"] * last["list_price"]).groupby(["store_id", "sku_id"])["revenue"].sum()
    series = top.sort_values(ascending=False).index[:4]
    fig, axes = plt.subplots(2, 2, figsize=(11, 6), sharex=True)
    for ax, (store, sku) in zip(axes.flat, series):
        rows = last[(last["store_id"] == store) & (last["sku_id"] == sku)].sort_values("dt")
        ax.plot(rows["dt"], rows["units_sold"], "k.-", label="actual")
        ax.plot(rows["dt"], rows["prediction"], "C0-", label="forecast (P50)")
        if "p10" in rows:
            ax.fill_between(rows["dt"], rows["p10"], rows["p90"], color="C0", alpha=0.2, label="P10–P90")
        ax.plot(rows["dt"], rows["seasonal_naive"], "C3:", label="seasonal naive")
        ax.set_title(f"{store} × {sku}", fontsize=9)
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"Units per day after the origin {evaluation.origins[-1].origin}")
    fig.tight_layout()
    paths = [folder / "forecast_vs_actual.png"]
    fig.savefig(paths[0], dpi=110)
    plt.close(fig)
    return [*paths, feature_importance(forecaster.booster_, "Demand model: feature importance",
                                       folder / "feature_importance.png")]
