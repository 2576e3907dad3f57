"""Forecast metrics shared by the model families: pure functions over frames.

WRMSSE follows the M5 competition at the bottom level: each series' squared error over the
horizon is scaled by its in-sample mean squared one-step naive error, counted from the series'
first sale; series are weighted by their revenue over the last 28 days of the training period.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SERIES = ["store_id", "sku_id"]


def series_codes(rows: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """Each row's series number and the series (store_id, sku_id), sorted; factorised column by
    column, which is many times faster than indexing millions of (store, SKU) pairs."""
    store_codes, stores = _sorted_codes(rows["store_id"])
    sku_codes, skus = _sorted_codes(rows["sku_id"])
    n = max(len(skus), 1)
    codes, pairs = pd.factorize(store_codes.astype(np.int64) * n + sku_codes, sort=True)
    pairs = np.asarray(pairs, dtype=np.int64)
    keys = pd.DataFrame({"store_id": np.asarray(stores)[pairs // n], "sku_id": np.asarray(skus)[pairs % n]})
    return codes, keys.astype({"store_id": _plain(rows["store_id"].dtype), "sku_id": _plain(rows["sku_id"].dtype)})


def _sorted_codes(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """pd.factorize(column, sort=True), also for a categorical column (ids read as categoricals to
    save memory): codes ranked by the categories' values, so the order is the strings' order."""
    if not isinstance(column.dtype, pd.CategoricalDtype):
        return pd.factorize(column, sort=True)
    categories = np.asarray(column.cat.categories, dtype=object)
    order = np.argsort(categories)
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    codes = column.cat.codes.to_numpy()
    return np.where(codes >= 0, rank[codes], -1), categories[order]


def _plain(dtype):
    """The series keys are plain strings even when the rows' ids are categoricals."""
    return str if isinstance(dtype, pd.CategoricalDtype) else dtype


def series_scales(history: pd.DataFrame, *, target: str = "units_sold", revenue: str = "revenue_net",
                  weight_days: int = 28) -> pd.DataFrame:
    """WRMSSE's denominator and weight of every series in `history` (training rows store_id,
    sku_id, dt, target, revenue up to the forecast origin), indexed by store_id, sku_id:
    `scale`, the mean squared one-step change counted from the series' first sale (NaN before
    two days of it), and `weight`, its revenue over the last `weight_days` days (clipped at 0).
    Compute it once per origin and pass it to `wrmsse` for every forecast scored there."""
    codes, series = series_codes(history)
    day = pd.to_datetime(history["dt"]).to_numpy().astype("datetime64[D]").astype(np.int64)
    order = np.lexsort((day, codes))
    code, day = codes[order], day[order]
    y = history[target].to_numpy(dtype=np.float64)[order]
    money = history[revenue].to_numpy(dtype=np.float64)[order]
    first_row = np.r_[True, code[1:] != code[:-1]]
    sold_so_far = np.cumsum(y > 0)
    before_series = (sold_so_far - (y > 0))[first_row][np.cumsum(first_row) - 1]
    started = sold_so_far > before_series
    n = len(series)
    step = np.r_[False, started[1:] & started[:-1] & ~first_row[1:]]  # a change from the day before, both after the first sale
    change = np.diff(y, prepend=np.nan)
    squares = np.bincount(code[step], weights=change[step] ** 2, minlength=n)
    steps = np.bincount(code[step], minlength=n)
    recent = started & (day > day[started].max() - weight_days) if started.any() else started
    weight = np.bincount(code[recent], weights=money[recent], minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.where(steps > 0, squares / steps, np.nan)
    index = pd.MultiIndex.from_frame(series)
    return pd.DataFrame({"scale": scale, "weight": np.clip(weight, 0, None)}, index=index)


def wrmsse(history: pd.DataFrame, holdout: pd.DataFrame, *, prediction: str = "prediction",
           target: str = "units_sold", revenue: str = "revenue_net", weight_days: int = 28,
           scales: pd.DataFrame | None = None) -> float:
    """Weighted root mean squared scaled error.

    `history`: training rows (store_id, sku_id, dt, target, revenue) up to the forecast origin,
    or None when `scales` (from `series_scales(history)`) is given; `holdout`: rows after the
    origin with the target and a prediction column. Series without a sale in the history, or
    whose history never changes, carry no weight. Returns NaN when no series qualifies.
    """
    if scales is None:
        scales = series_scales(history, target=target, revenue=revenue, weight_days=weight_days)
    return weighted_rmsse(series_rmsse(scales, holdout, prediction=prediction, target=target))


def weighted_rmsse(table: pd.DataFrame) -> float:
    """WRMSSE from a series_rmsse() table; NaN when no series qualifies."""
    if table.empty:
        return float("nan")
    return float((table["rmsse"] * table["weight"]).sum() / table["weight"].sum())


def series_rmsse(scales: pd.DataFrame, holdout: pd.DataFrame, *, prediction: str = "prediction",
                 target: str = "units_sold") -> pd.DataFrame:
    """Each weighted series' RMSSE and weight (what WRMSSE averages), indexed like `scales`:
    what a paired comparison of two forecasts over the same series resamples."""
    err = (holdout[target] - holdout[prediction]) ** 2
    mse = err.groupby([holdout[c] for c in SERIES]).mean().rename("mse")
    table = scales.join(mse, how="inner")
    table = table[(table["scale"] > 0) & (table["weight"] > 0)]
    return pd.DataFrame({"rmsse": np.sqrt(table["mse"] / table["scale"]), "weight": table["weight"]})


def wape(actual: pd.Series, predicted: pd.Series) -> float:
    """Σ|y − ŷ| / Σy: the share of units the forecast gets wrong. NaN when nothing sold."""
    total = float(np.abs(actual).sum())
    return float(np.abs(actual - predicted).sum() / total) if total else float("nan")


def bias(actual: pd.Series, predicted: pd.Series) -> float:
    """Σ(ŷ − y) / Σy: positive when the forecast is too high."""
    total = float(actual.sum())
    return float((predicted - actual).sum() / total) if total else float("nan")


def interval_coverage(actual: pd.Series, lower: pd.Series, upper: pd.Series) -> float:
    """Share of actuals (rows) inside [lower, upper]."""
    return float(((actual >= lower) & (actual <= upper)).mean())


def interval_coverage_units(actual: pd.Series, lower: pd.Series, upper: pd.Series) -> float:
    """Share of the units sold that fell in rows whose actual is inside [lower, upper]: the rows
    that sell weigh by what they sell (zero rows, easy to cover, weigh nothing). NaN without units."""
    actual = np.asarray(actual, float)
    inside = (actual >= np.asarray(lower)) & (actual <= np.asarray(upper))
    total = actual.clip(min=0).sum()
    return float(actual.clip(min=0)[inside].sum() / total) if total > 0 else float("nan")


BOOTSTRAP_RESAMPLES = 1000


def bootstrap_wrmsse_ratio(model: pd.DataFrame, peer: pd.DataFrame, resamples: int = BOOTSTRAP_RESAMPLES,
                           seed: int = 0) -> tuple[float, float]:
    """95 % interval of WRMSSE(model) / WRMSSE(peer), resampling the same series for both (paired):
    `model` and `peer` are series_rmsse() tables (rmsse, weight) over the same series. NaN, NaN
    with fewer than two series (resampling one series says nothing)."""
    joined = model.join(peer, lsuffix="_m", rsuffix="_p", how="inner")
    if len(joined) < 2:
        return float("nan"), float("nan")
    w = joined["weight_m"].to_numpy()
    return bootstrap_ratio(w * joined["rmsse_m"].to_numpy(), w * joined["rmsse_p"].to_numpy(), resamples, seed)


def bootstrap_ratio(numerator: np.ndarray, denominator: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES,
                    seed: int = 0) -> tuple[float, float]:
    """95 % interval of Σ numerator / Σ denominator, resampling the same units for both (paired).
    NaN, NaN with fewer than two units."""
    numerator, denominator = np.asarray(numerator, float), np.asarray(denominator, float)
    if len(numerator) < 2:
        return float("nan"), float("nan")
    picks = np.random.default_rng(seed).integers(0, len(numerator), size=(resamples, len(numerator)))
    ratios = numerator[picks].sum(1) / denominator[picks].sum(1)
    return float(np.quantile(ratios, 0.025)), float(np.quantile(ratios, 0.975))


def bootstrap_mean_difference(model: np.ndarray, peer: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES,
                              seed: int = 0) -> tuple[float, float]:
    """95 % interval of mean(model − peer) over the same units (members), resampled in pairs."""
    model, peer = np.asarray(model, float), np.asarray(peer, float)
    if len(model) < 2:
        return float("nan"), float("nan")
    picks = np.random.default_rng(seed).integers(0, len(model), size=(resamples, len(model)))
    diffs = model[picks].mean(1) - peer[picks].mean(1)
    return float(np.quantile(diffs, 0.025)), float(np.quantile(diffs, 0.975))
