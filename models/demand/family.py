"""The demand family as the platform sees it (models/family.py): its gate, metrics, memory and
the checks on a loaded forecaster."""

from __future__ import annotations

import numpy as np

from models.family import Family, Footprint, Gate



def smoke_test(forecaster) -> None:
    series = forecaster.panel_.series
    store, sku = series["store_id"].iat[0], series["sku_id"].iat[0]
    out = forecaster.forecast(store, [sku], 2)
    if len(out) != 2 or not (out["p50"] >= 0).all() or out[["p10", "p50", "p90"]].isna().any().any():
        raise ValueError("smoke test: the forecast has missing or negative values")


def sanity(forecaster, sample: int) -> list[str]:
    """Forecasts over the model's whole horizon for a few SKUs of `sample` stores: finite,
    non-negative, P10 ≤ P50 ≤ P90."""
    series = forecaster.panel_.series
    problems = []
    for store, rows in list(series.groupby("store_id"))[:sample]:
        out = forecaster.forecast(store, rows["sku_id"].head(5).tolist())  # the model's whole horizon
        q = out[["p10", "p50", "p90"]].to_numpy(float)
        if not np.isfinite(q).all():
            problems.append(f"store {store}: forecasts with NaN or infinity")
        elif (q < 0).any():
            problems.append(f"store {store}: negative forecasts")
        elif (q[:, 0] > q[:, 1] + 1e-9).any() or (q[:, 1] > q[:, 2] + 1e-9).any():
            problems.append(f"store {store}: P10 ≤ P50 ≤ P90 broken")
    return problems[:5]


FAMILY = Family(
    name="demand",
    config_ref="models.demand.config:DemandConfig",
    gate=Gate(metric="wrmsse", higher_is_better=False, beat=["wrmsse_seasonal_naive", "wrmsse_moving_average", "wrmsse_tsb"]),
    headline=("wrmsse", "wrmsse_seasonal_naive", "wrmsse_moving_average", "wrmsse_tsb", "wrmsse_oracle",
              "wrmsse_ratio_best_baseline", "wrmsse_ratio_best_baseline_ci_low", "wrmsse_ratio_best_baseline_ci_high",
              "wape", "interval_coverage_p10_p90", "interval_coverage_p10_p90_units"),
    served_metrics=("wrmsse", "wrmsse_seasonal_naive", "wrmsse_oracle", "wape", "interval_coverage_p10_p90"),
    date_word="origin",
    memory=Footprint("demand_daily", 2.0, 220.0),
    api_version=1, smoke_test=smoke_test, sanity=sanity,
    api_ref="models.demand.api:API", training_ref="models.demand.training",
    summary="Demand: units per store × SKU × day, 28 days ahead, with P10/P90.",
)
