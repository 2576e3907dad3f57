"""Job: train the demand family and register a candidate version.

Steps:
1. read curated demand_daily and the dimension tables (and truth/ when the lake has it: the
   oracle's expected demand, for evaluation only);
2. evaluate on rolling origins — the model, seasonal naive, the 28-day moving average and the
   oracle on the same holdout rows;
3. fit the production model on everything up to the lake's last day and calibrate its P10/P90
   on the last evaluation origin;
4. log params, metrics (wrmsse, wrmsse_seasonal_naive, wrmsse_moving_average, wrmsse_oracle,
   wape, interval_coverage_p10_p90, …), dataset digests, plots and lineage to MLflow;
5. register the model as `quanyu-demand` and point the alias `candidate` at it.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from jobs.runtime import executor
from jobs.tracking import TrainResult, family_run, log_inputs, register
from lake.contract import RAW_TABLES, complete, empty
from lake.store import Lake, LakeError
from models.demand import blend as blending
from models.demand.config import DemandConfig
from models.demand.evaluate import Evaluation, evaluate
from models.demand.features import DATE_OF_YEAR
from models.demand.forecaster import DemandData, DemandForecaster

DEMAND_COLUMNS = ["dt", "store_id", "sku_id", "units_sold", "revenue_net", "list_price", "offer_discount_pct"]


def read_demand_data(lake: Lake, with_truth: bool = True, truth_days: int | None = None,
                     as_of: dt.date | None = None) -> tuple[DemandData, pd.DataFrame | None]:
    """The frames the demand family reads, and the oracle's expected demand when truth/ exists
    and `with_truth`: of the last `truth_days` days only when given (the days the evaluation
    scores; all of truth is as large as the demand itself, 2 GB more at medium scale). With
    `as_of`, the lake as it was that day: no curated day after it.
    Raises LakeError when the lake is not merged (up to `as_of`)."""
    days = [d for d in lake.partitions("curated", "demand_daily") if as_of is None or d <= as_of]
    if not days:
        raise LakeError(f"no curated demand under {lake.root}" + (f" on or before {as_of}" if as_of else "")
                        + "; run quanyu data merge first" + (" or choose a later --as-of" if as_of else ""))
    # store and SKU ids as categoricals: as strings they are 44 bytes a row (3 GB at medium scale,
    # copied again by every filter); as codes, 4
    demand = lake.read_all("curated", "demand_daily", columns=DEMAND_COLUMNS,
                           days=days).to_pandas(strings_to_categorical=True)

    def read(table: str, absent=None) -> pd.DataFrame | None:
        # complete(): every optional column of the contract is present (as nulls if the brand
        # does not provide it), so the family never trips over a missing optional column
        if not lake.files("raw", table):
            return absent
        return complete(lake.read("raw", table), RAW_TABLES[table]).to_pandas()

    # a brand without a calendar or promotions has no events and no promotions: empty tables
    data = DemandData(demand=demand, products=read("products"), stores=read("stores"),
                      calendar=read("calendar", empty(RAW_TABLES["calendar"]).to_pandas()),
                      promotions=read("promotions", empty(RAW_TABLES["promotions"]).to_pandas()), prices=read("prices"))
    truth = None
    days = [d for d in lake.partitions("truth", "expected_demand") if as_of is None or d <= as_of] if with_truth else []
    if truth_days:
        first = max(demand["dt"]) - dt.timedelta(days=truth_days - 1)
        days = [d for d in days if d >= first]
    if days:
        raw = lake.read_all("truth", "expected_demand", columns=["store_id", "sku_id", "expected_units"],
                            days=days).to_pandas()
        truth = raw.groupby(["dt", "store_id", "sku_id"], as_index=False)["expected_units"].sum()
        if lake.files("truth", "products"):
            truth = with_attribute_oracle(truth, lake.read("truth", "products").to_pandas())
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
    gain = pd.Series(forecaster.booster_.feature_importance("gain"), index=forecaster.booster_.feature_name())
    gain = gain.sort_values().tail(25)
    fig, ax = plt.subplots(figsize=(7, 7))
    ax.barh(gain.index, gain.to_numpy() / gain.sum())
    ax.set_xlabel("share of total gain")
    ax.set_title("Demand model: feature importance")
    fig.tight_layout()
    paths.append(folder / "feature_importance.png")
    fig.savefig(paths[1], dpi=110)
    plt.close(fig)
    return paths


def evaluated_days(config: DemandConfig) -> int:
    """How many of the lake's last days the rolling-origin evaluation scores."""
    return config.evaluation.days_scored(config.features.horizon)


def holdout_metrics(config: DemandConfig, lake: Lake) -> dict[str, float]:
    """The rolling-origin holdout's metrics of `config` on the lake, without fitting, logging or
    registering the production model: how the retrain's gate re-scores a champion's recipe."""
    data, truth = read_demand_data(lake, truth_days=evaluated_days(config))
    evaluation, _ = evaluate(data, config, truth, executor=executor())
    return {k: v for k, v in evaluation.metrics.items() if v == v}  # drop NaN


def main(config: DemandConfig, lake: Lake, tracking_uri: str, config_path: str | None = None,
         artifact_root: str | None = None, run_tags: dict | None = None, as_of: dt.date | None = None) -> TrainResult:
    """Train, evaluate, log and register; Ray must be initialised. With `as_of`, on the lake as
    it was that day (a backtest: `quanyu predict demand --as-of` the same day, then compare
    with the days that followed)."""
    import mlflow

    from models.demand.pyfunc import DemandPyfunc

    started = time.monotonic()

    def say(line: str) -> None:
        print(f"train demand: {line} [{time.monotonic() - started:.0f} s]", file=sys.stderr, flush=True)

    data, truth = read_demand_data(lake, truth_days=evaluated_days(config), as_of=as_of)
    say(f"read {len(data.demand):,} demand rows")
    where = executor()  # the cluster: one task of a node's CPUs per model, or Ray Train across nodes
    evaluation, last_origin = evaluate(data, config, truth, progress=say, executor=where)
    forecaster = DemandForecaster(config).fit(data, executor=where).blend(evaluation.blend_weights)
    mixes = {s: "/".join(f"{w:g}" for w in blending.as_mix(m)) for s, m in evaluation.blend_weights.items()}
    say(f"fitted the production model up to {forecaster.origin_} ({forecaster.layout_.describe()}); mix of "
        f"model / 28-day moving average / TSB by level segment: {mixes or 'the model alone'}")
    if evaluation.residuals:  # the bands: every backtest origin's residuals, pooled
        forecaster.calibrate(*(np.concatenate(parts) for parts in zip(*evaluation.residuals)))
    metrics = {k: v for k, v in evaluation.metrics.items() if v == v}  # drop NaN

    first, last_day = min(data.demand["dt"]), max(data.demand["dt"])
    tags = {"lake": str(lake.root), "lake_first_dt": str(first), "lake_last_dt": str(last_day),
            "layout": forecaster.layout_.describe(), "config_path": config_path or "defaults",
            **({"as_of": str(as_of)} if as_of else {})}
    params = {"training_rows": forecaster.training_rows_, "origins": ",".join(str(o.origin) for o in evaluation.origins),
              "blend_weights": json.dumps(evaluation.blend_weights),
              "sized_min_data_in_leaf": forecaster.params_["min_data_in_leaf"],
              "sized_num_leaves": forecaster.params_["num_leaves"],
              "date_of_year_features": any(c in forecaster.features_order_ for c in DATE_OF_YEAR),
              "best_baseline": evaluation.best_baseline}
    tags.update(run_tags or {})  # e.g. the daily retrain's parent run
    with family_run("demand", tracking_uri, artifact_root, f"demand {last_day}", config, tags, params,
                    metrics) as (run, folder):
        log_inputs(lake, [("demand_daily", data.demand, "curated")])
        for path in _plots(evaluation, forecaster, folder):
            mlflow.log_artifact(str(path), artifact_path="plots")
        (folder / "config.json").write_text(config.model_dump_json(indent=1))
        mlflow.log_artifact(str(folder / "config.json"))
        version = register("demand", DemandPyfunc(), {"forecaster": str(forecaster.save(folder / "forecaster"))})
    return TrainResult(run_id=run.info.run_id, version=version, metrics=metrics, origin=forecaster.origin_,
                       seconds=round(time.monotonic() - started, 1))

