"""The one report type every family's evaluation hands back: its metrics on the holdout (the
model's, its baselines', the oracle's where the lake has one) and the tables worth keeping beside
them (NDCG by member activity, out-of-fold predictions, …). The training job logs the metrics
and writes each table as a CSV artifact; the retrain's gate reads the metrics."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd


@dataclass
class Report:
    metrics: dict[str, float]
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def finite(self) -> dict[str, float]:
        """The metrics that are numbers: a NaN (a baseline that could not be scored) is left out."""
        return {k: float(v) for k, v in self.metrics.items() if v is not None and not math.isnan(v)}
