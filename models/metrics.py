"""Forecast metrics shared by the model families: pure functions over frames.

WRMSSE follows the M5 competition at the bottom level: each series' squared error over the
horizon is scaled by its in-sample mean squared one-step naive error, counted from the series'
first sale; series are weighted by their revenue over the last 28 days of the training period.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SERIES = ["store_id", "sku_id"]


def wrmsse(history: pd.DataFrame, holdout: pd.DataFrame, *, prediction: str = "prediction",
           target: str = "units_sold", revenue: str = "revenue_net", weight_days: int = 28) -> float:
    """Weighted root mean squared scaled error.

    `history`: training rows (store_id, sku_id, dt, target, revenue) up to the forecast origin;
    `holdout`: rows after the origin with the target and a prediction column. Series without a
    sale in the history, or whose history never changes, carry no weight. Returns NaN when no
    series qualifies.
    """
    hist = history.assign(dt=pd.to_datetime(history["dt"])).sort_values([*SERIES, "dt"])
    started = hist[target].gt(0).groupby([hist[c] for c in SERIES]).cummax()
    hist = hist[started]
    if hist.empty:
        return float("nan")
    diff = hist.groupby(SERIES)[target].diff()
    scale = (diff**2).groupby([hist[c] for c in SERIES]).mean().rename("scale")
    recent = hist[hist["dt"] > hist["dt"].max() - pd.Timedelta(days=weight_days)]
    weight = recent.groupby(SERIES)[revenue].sum().clip(lower=0).rename("weight")
    err = (holdout[target] - holdout[prediction]) ** 2
    mse = err.groupby([holdout[c] for c in SERIES]).mean().rename("mse")
    table = pd.concat([scale, weight, mse], axis=1, join="inner")
    table = table[(table["scale"] > 0) & (table["weight"] > 0)]
    if table.empty:
        return float("nan")
    rmsse = np.sqrt(table["mse"] / table["scale"])
    return float((rmsse * table["weight"]).sum() / table["weight"].sum())


def wape(actual: pd.Series, predicted: pd.Series) -> float:
    """Σ|y − ŷ| / Σy: the share of units the forecast gets wrong. NaN when nothing sold."""
    total = float(np.abs(actual).sum())
    return float(np.abs(actual - predicted).sum() / total) if total else float("nan")


def bias(actual: pd.Series, predicted: pd.Series) -> float:
    """Σ(ŷ − y) / Σy: positive when the forecast is too high."""
    total = float(actual.sum())
    return float((predicted - actual).sum() / total) if total else float("nan")


def interval_coverage(actual: pd.Series, lower: pd.Series, upper: pd.Series) -> float:
    """Share of actuals inside [lower, upper]."""
    return float(((actual >= lower) & (actual <= upper)).mean())
