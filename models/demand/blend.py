"""The simple forecasts inside the demand model: a backtest-chosen blend of the LightGBM forecast
with each series' 28-day moving average and its TSB level, by level of the series.

On data it was not designed for (a short history, a level that shifts, intermittent series) a
global model can lose to what a brand would compute in a spreadsheet: a moving average, or, for
series that sell now and then, an intermittent-demand method (TSB: probability of a sale × its
size, each smoothed). So the model carries them: per segment of series (by their recent level),
the weights of `w_model · model + w_ma · moving average + w_tsb · TSB` (tenths summing to one)
that minimised the scaled squared error on earlier backtest origins. Where the model is better,
its weight is 1 and nothing changes; where a simple method is, the model serves it.
"""

from __future__ import annotations

import itertools

import numpy as np

LEVEL_EDGES = np.array([0.1, 0.5, 2.0, 10.0])  # units a day over the last 28 days: five segments
CANDIDATES = ("model", "moving_average", "tsb")
# every mix of the candidates in tenths: (1, 0, 0) is the model alone
GRID = np.array([w for w in itertools.product(range(11), repeat=len(CANDIDATES)) if sum(w) == 10], float)[::-1] / 10


def moving_average(units: np.ndarray, days: int = 28) -> np.ndarray:
    """Each series' mean units over its last `days` days with a row (NaN: no row); 0 without any."""
    window = units[:, -days:]
    counts = (~np.isnan(window)).sum(axis=1)
    return np.where(counts > 0, np.nansum(window, axis=1) / np.maximum(counts, 1), 0.0)


def segments(level: np.ndarray) -> np.ndarray:
    """The segment of each series by its moving-average level."""
    return np.searchsorted(LEVEL_EDGES, level, side="right")


def choose_weights(candidates: np.ndarray, actual: np.ndarray, segment: np.ndarray,
                   scale: np.ndarray) -> dict[int, list[float]]:
    """Per segment, the mix of the candidates (columns of `candidates`, in CANDIDATES order) that
    minimises Σ (actual − mix)² / scale over the given holdout rows; `scale` is each row's series
    scale (WRMSSE's denominator). Ties keep the model's share high. Segments without rows are left
    out (they then keep the model alone)."""
    weights = {}
    usable = np.isfinite(scale) & (scale > 0) & np.isfinite(candidates).all(axis=1)
    for s in np.unique(segment[usable]):
        rows = usable & (segment == s)
        c, y, inverse = candidates[rows], actual[rows], 1.0 / scale[rows]
        # Σ (y − c·w)² / scale for every mix w at once, from k × k sums (no rows × mixes matrix)
        gram, cross = (c * inverse[:, None]).T @ c, (c * (y * inverse)[:, None]).sum(axis=0)
        errors = np.einsum("mi,ij,mj->m", GRID, gram, GRID) - 2 * GRID @ cross
        weights[int(s)] = [round(float(w), 2) for w in GRID[int(np.argmin(errors))]]
    return weights


def as_mix(weight: float | list[float]) -> list[float]:
    """A segment's weights as a mix of CANDIDATES; a single number is the model's share against
    the moving average (versions saved before TSB was a candidate)."""
    if isinstance(weight, (int, float)):
        return [float(weight), 1.0 - float(weight), 0.0]
    return [float(w) for w in weight]


def apply(candidates: np.ndarray, segment: np.ndarray, weights: dict[int, float | list[float]]) -> np.ndarray:
    """The blended forecast; a segment without weights keeps the model (column 0)."""
    if not weights:
        return candidates[:, 0]
    table = np.array([as_mix(weights.get(s, 1.0)) for s in range(len(LEVEL_EDGES) + 1)])
    return (candidates * table[segment]).sum(axis=1)


def model_share(weights: dict[int, float | list[float]]) -> float:
    """The model's mean weight over the segments (1: the model alone everywhere)."""
    return float(np.mean([as_mix(w)[0] for w in weights.values()])) if weights else 1.0
