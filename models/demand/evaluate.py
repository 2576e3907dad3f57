"""Evaluation of the demand family on rolling origins: the model, its baselines and (when the
lake has truth/) the oracle, all on the same holdout rows.

Origins are a week apart by default (EvaluationConfig): at each one a model trained on the days
up to it — fitted there, or at most `refit_days` earlier and moved to the origin's history —
forecasts the `horizon` days after it; the metrics are averaged over origins. What an origin
learns from earlier origins (the blend's weights, the interval calibration) uses only the rows
whose day had passed by then: the holdouts of weekly origins overlap, and a day after the origin
is not known at the origin.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from models.demand.config import DemandConfig
from models.demand.features import build_panel
from models.demand.forecaster import DemandData, DemandForecaster
from models.demand import blend as blending
from models.demand.train import Layout
from models.executor import Executor
from models.metrics import (
    bias, bootstrap_ratio, interval_coverage, interval_coverage_units, series_rmsse, series_scales, wape, weighted_rmsse,
    wrmsse,
)

BASELINES = ("seasonal_naive", "moving_average", "tsb")

NEW_SKU_DAYS = 28  # a SKU launched fewer days than this before the origin counts as new


def baselines(history: pd.DataFrame, holdout: pd.DataFrame, origin: dt.date) -> dict[str, np.ndarray]:
    """Seasonal naive (the last week, repeated) and the 28-day moving average, per holdout row.
    Series without history forecast zero."""
    panel = build_panel(history)
    last = panel.days - 1
    index = pd.MultiIndex.from_frame(panel.series).get_indexer(pd.MultiIndex.from_frame(holdout[["store_id", "sku_id"]]))
    horizon = (pd.to_datetime(holdout["dt"]) - pd.Timestamp(origin)).dt.days.to_numpy()
    week = np.nan_to_num(panel.units[:, last - 6:last + 1])
    window = panel.units[:, max(0, last - 27):last + 1]
    counts = (~np.isnan(window)).sum(axis=1)
    moving = np.where(counts > 0, np.nansum(window, axis=1) / np.maximum(counts, 1), 0.0)
    known = index >= 0
    naive = np.zeros(len(holdout))
    naive[known] = week[index[known], (horizon[known] - 1) % 7]
    average = np.zeros(len(holdout))
    average[known] = moving[index[known]]
    return {"seasonal_naive": naive, "moving_average": average}


@dataclass
class OriginResult:
    origin: dt.date
    holdout: pd.DataFrame  # store_id, sku_id, dt, units_sold, prediction, baselines, oracle, p10, p90
    metrics: dict[str, float]


@dataclass
class Evaluation:
    origins: list[OriginResult] = field(default_factory=list)
    blend_weights: dict[int, list[float]] = field(default_factory=dict)  # chosen on every origin: the production model's
    residuals: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # (forecast, actual) per origin
    pooled: dict[str, float] = field(default_factory=dict)  # metrics over every origin's series at once
    best_baseline: str | None = None  # the baseline with the lowest mean WRMSSE

    @property
    def metrics(self) -> dict[str, float]:
        """Each metric averaged over the origins where it exists, and the pooled ones."""
        keys = sorted({k for o in self.origins for k in o.metrics})
        return {**{k: float(np.nanmean([o.metrics.get(k, np.nan) for o in self.origins])) for k in keys
                   if not all(np.isnan(o.metrics.get(k, np.nan)) for o in self.origins)}, **self.pooled}


def paired_to_best_baseline(evaluation: Evaluation, scored: list[dict[str, pd.DataFrame]]) -> tuple[str, dict[str, float]]:
    """The model's WRMSSE over every origin's series pooled, as a ratio to the best baseline's
    (the one with the lowest mean WRMSSE), with a 95 % paired bootstrap interval over those series:
    whether the model beats the best simple forecast by more than noise. `scored`: per origin, the
    series_rmsse() table of the model and of each baseline."""
    means = {name: np.nanmean([o.metrics.get(f"wrmsse_{name}", np.nan) for o in evaluation.origins])
             for name in BASELINES}
    best = min(means, key=lambda name: np.inf if np.isnan(means[name]) else means[name])
    model = pd.concat([s["prediction"] for s in scored], keys=range(len(scored)))
    peer = pd.concat([s[best] for s in scored], keys=range(len(scored)))
    joined = model.join(peer, lsuffix="_m", rsuffix="_p", how="inner")
    if joined.empty:
        return best, {}
    ratio = float((joined["weight_m"] * joined["rmsse_m"]).sum() / (joined["weight_m"] * joined["rmsse_p"]).sum())
    # resampled by series, each with its errors at every origin: the holdouts of weekly origins
    # overlap, so one series' origins are not independent draws
    per_series = pd.DataFrame({"model": joined["weight_m"] * joined["rmsse_m"],
                               "peer": joined["weight_m"] * joined["rmsse_p"]}).groupby(level=list(range(1, joined.index.nlevels))).sum()
    low, high = bootstrap_ratio(per_series["model"].to_numpy(), per_series["peer"].to_numpy())
    return best, {"wrmsse_ratio_best_baseline": ratio, "wrmsse_ratio_best_baseline_ci_low": low,
                  "wrmsse_ratio_best_baseline_ci_high": high}


def evaluate(data: DemandData, config: DemandConfig, truth: pd.DataFrame | None = None,
             layout: Layout | None = None, progress=None,
             executor: Executor | None = None) -> tuple[Evaluation, DemandForecaster | None]:
    """Rolling-origin evaluation. Returns the evaluation and the forecaster of the last origin
    (calibrated on the one before it), whose residuals then calibrate the production model.
    `progress`, when given, is called with a line of text after each origin; each origin's model
    trains where `executor` says (this process by default)."""
    horizon = config.features.horizon
    origins = config.evaluation.origin_days(max(data.demand["dt"]), horizon)
    evaluation = Evaluation()
    residuals: list[tuple[np.ndarray, ...]] = []  # (forecast, actual, day) of each origin so far
    scored: list[dict[str, pd.DataFrame]] = []  # per origin: series_rmsse of the model and of each baseline
    fitted = forecaster = None
    launch = data.products.set_index("sku_id")["launch_date"]
    earlier: list[tuple[np.ndarray, ...]] = []  # (candidates, actual, segment, scale, day) of each origin
    for origin in origins:
        end = origin + dt.timedelta(days=horizon)
        holdout = data.demand[(data.demand["dt"] > origin) & (data.demand["dt"] <= end)].copy()
        if fitted is None or (origin - fitted.origin_).days >= config.evaluation.refit_days:
            fitted = forecaster = DemandForecaster(config).fit(data, origin=origin, layout=layout, executor=executor)
        else:  # the last fit, forecasting from this origin's history: still out of sample
            forecaster = fitted.as_of(data.demand, origin)
        holdout["lightgbm"] = forecaster.predict(holdout)
        days = pd.to_datetime(holdout["dt"]).to_numpy().astype("datetime64[D]")
        # taken after the fit: at medium scale this copy of the history is 4 GB the fit does not need
        history = data.demand[data.demand["dt"] <= origin]
        for name, values in baselines(history, holdout, origin).items():
            holdout[name] = values
        scales = series_scales(history)  # the same denominators and weights for every forecast here
        del history
        # the blend with the moving average, its weights chosen on the earlier origins only (the
        # first origin's forecast is the model's own): what this origin's forecast would have been
        simple = forecaster.simple_forecasts(holdout["store_id"], holdout["sku_id"])
        holdout["tsb"] = np.nan_to_num(simple[:, 1])
        known = ~np.isnan(simple[:, 0])
        scale = scales["scale"].reindex(pd.MultiIndex.from_frame(holdout[["store_id", "sku_id"]].astype(str))).to_numpy()
        now = (np.column_stack([holdout["lightgbm"].to_numpy()[known], simple[known]]),
               holdout["units_sold"].to_numpy(float)[known], blending.segments(simple[known, 0]), scale[known],
               days[known])
        past = known_at(earlier, origin)
        weights = blending.choose_weights(*past[:4]) if past else {}
        prediction = holdout["lightgbm"].to_numpy().copy()
        prediction[known] = blending.apply(now[0], now[2], weights)
        holdout["prediction"] = prediction
        earlier.append(now)
        # each forecast's per-series errors once: WRMSSE here, the paired interval after the loop
        scored.append({name: series_rmsse(scales, holdout, prediction=name) for name in ("prediction", *BASELINES)})
        metrics = {"wrmsse": weighted_rmsse(scored[-1]["prediction"]),
                   "wape": wape(holdout["units_sold"], holdout["prediction"]),
                   "bias": bias(holdout["units_sold"], holdout["prediction"]),
                   "wrmsse_lightgbm": wrmsse(None, holdout, prediction="lightgbm", scales=scales),
                   "blend_model_share": blending.model_share(weights),
                   "model_age_days": float((origin - fitted.origin_).days)}
        for name in BASELINES:
            metrics[f"wrmsse_{name}"] = weighted_rmsse(scored[-1][name])
            metrics[f"wape_{name}"] = wape(holdout["units_sold"], holdout[name])
        launched = pd.to_datetime(holdout["sku_id"].map(launch)).to_numpy()
        # new SKUs: launched within NEW_SKU_DAYS before the origin (some history) or after it (none)
        groups = {"new_sku": launched > np.datetime64(origin - dt.timedelta(days=NEW_SKU_DAYS)),
                  "new_sku_launched_before_origin": (launched > np.datetime64(origin - dt.timedelta(days=NEW_SKU_DAYS)))
                  & (launched <= np.datetime64(origin)),
                  "new_sku_launched_after_origin": launched > np.datetime64(origin)}
        metrics["new_sku_rows"] = float(groups["new_sku"].sum())
        if truth is not None:
            expected = truth[(truth["dt"] > origin) & (truth["dt"] <= end)]
            holdout = holdout.merge(expected, on=["dt", "store_id", "sku_id"], how="left")  # keeps row order
            holdout["oracle"] = holdout["expected_units"].fillna(0.0)
            metrics["wrmsse_oracle"] = wrmsse(None, holdout, prediction="oracle", scales=scales)
            metrics["wape_oracle"] = wape(holdout["units_sold"], holdout["oracle"])
            if "expected_units_attributes" in holdout:
                holdout["attribute_oracle"] = holdout["expected_units_attributes"].fillna(0.0)
        for name, mask in groups.items():
            if mask.any():
                metrics[f"mae_{name}"] = float((holdout["units_sold"] - holdout["prediction"])[mask].abs().mean())
                if truth is not None:
                    metrics[f"mae_{name}_oracle"] = float((holdout["units_sold"] - holdout["oracle"])[mask].abs().mean())
                if "attribute_oracle" in holdout:
                    metrics[f"mae_{name}_attribute_oracle"] = float(
                        (holdout["units_sold"] - holdout["attribute_oracle"])[mask].abs().mean())
        past = known_at(residuals, origin)
        if past:  # calibrated on every earlier origin's forecasts of days known by now, pooled
            forecaster.calibrate(*past[:2])
            holdout["p10"], holdout["p90"] = forecaster.intervals(holdout["prediction"].to_numpy())
            metrics["interval_coverage_p10_p90"] = interval_coverage(holdout["units_sold"], holdout["p10"], holdout["p90"])
            metrics["interval_coverage_p10_p90_units"] = interval_coverage_units(holdout["units_sold"], holdout["p10"],
                                                                                 holdout["p90"])
        residuals.append((holdout["prediction"].to_numpy(), holdout["units_sold"].to_numpy(dtype=float), days))
        evaluation.origins.append(OriginResult(origin, holdout, metrics))
        if progress:
            progress(f"origin {origin} ({len(evaluation.origins)}/{len(origins)}): wrmsse {metrics['wrmsse']:.4f}, "
                     f"seasonal naive {metrics['wrmsse_seasonal_naive']:.4f}, {forecaster.training_rows_:,} training rows")
    evaluation.residuals = [r[:2] for r in residuals]
    if forecaster is not None and residuals:
        forecaster.calibrate(*(np.concatenate(parts) for parts in zip(*evaluation.residuals)))  # every origin's
    if scored:
        evaluation.best_baseline, evaluation.pooled = paired_to_best_baseline(evaluation, scored)
    if earlier:
        evaluation.blend_weights = blending.choose_weights(*[np.concatenate(parts) for parts in zip(*earlier)][:4])
    return evaluation, forecaster


def known_at(parts: list[tuple[np.ndarray, ...]], origin: dt.date) -> tuple[np.ndarray, ...] | None:
    """Earlier origins' arrays (the last one of each tuple: the row's day), pooled and cut to the
    rows whose day is on or before `origin`: what was known when forecasting from it. None when
    nothing was."""
    if not parts:
        return None
    pooled = [np.concatenate(columns) for columns in zip(*parts)]
    keep = pooled[-1] <= np.datetime64(origin, "D")
    return tuple(column[keep] for column in pooled) if keep.any() else None
