"""The 28-day moving average inside the demand model: a backtest-chosen blend of the LightGBM
forecast and each series' moving average, by level of the series.

On data it was not designed for (a short history, a level that shifts, intermittent series) a
global model can lose to the moving average a brand would compute in a spreadsheet. So the model
carries that baseline: per segment of series (by their recent level), the weight w of
`w · model + (1 − w) · moving average` that minimised the scaled squared error on earlier
backtest origins. Where the model is better, w is 1 and nothing changes.
"""

from __future__ import annotations

import numpy as np

LEVEL_EDGES = np.array([0.1, 0.5, 2.0, 10.0])  # units a day over the last 28 days: five segments
WEIGHTS = np.linspace(0.0, 1.0, 11)


def moving_average(units: np.ndarray, days: int = 28) -> np.ndarray:
    """Each series' mean units over its last `days` days with a row (NaN: no row); 0 without any."""
    window = units[:, -days:]
    counts = (~np.isnan(window)).sum(axis=1)
    return np.where(counts > 0, np.nansum(window, axis=1) / np.maximum(counts, 1), 0.0)


def segments(level: np.ndarray) -> np.ndarray:
    """The segment of each series by its moving-average level."""
    return np.searchsorted(LEVEL_EDGES, level, side="right")


def choose_weights(model: np.ndarray, baseline: np.ndarray, actual: np.ndarray, segment: np.ndarray,
                   scale: np.ndarray) -> dict[int, float]:
    """Per segment, the weight of the model (0..1 in tenths) that minimises Σ (actual − blend)² /
    scale over the given holdout rows; `scale` is each row's series scale (WRMSSE's denominator).
    Segments without rows are left out (they then keep the model: w = 1)."""
    weights = {}
    usable = np.isfinite(scale) & (scale > 0)
    for s in np.unique(segment[usable]):
        rows = usable & (segment == s)
        m, b, y, c = model[rows], baseline[rows], actual[rows], scale[rows]
        errors = [float((((y - (w * m + (1 - w) * b)) ** 2) / c).sum()) for w in WEIGHTS]
        weights[int(s)] = round(float(WEIGHTS[int(np.argmin(errors))]), 2)
    return weights


def apply(model: np.ndarray, baseline: np.ndarray, segment: np.ndarray, weights: dict[int, float]) -> np.ndarray:
    """The blended forecast; a segment without a weight keeps the model."""
    if not weights:
        return model
    w = np.array([weights.get(int(s), 1.0) for s in range(len(LEVEL_EDGES) + 1)])[segment]
    return w * model + (1 - w) * baseline
