"""The demand family's quality bars (issue 3) on the small lake (seed 42), the smallest scale at
which they hold with a margin (on tiny the ratio to seasonal naive sits at 0.74 against 0.75).
Measured with configs/demand.yaml (75 rounds at learning rate 0.1; 2026-12-03): wrmsse 0.667×
seasonal naive, 1.057× oracle, coverage 0.81; new SKUs with some history 1.45× the oracle's error
(11 SKUs: this ratio moves by tenths from one change to the next).

SKUs that launch after the origin have no sales to learn from, only attributes. The oracle knows
each one's hidden popularity, and even the best forecast from attributes (the oracle with the
popularity replaced by the mean of SKUs sharing the attributes) has 1.9× the oracle's error. The
issue's 1.5× is therefore out of reach for them by construction; they are held to 1.5× that
attribute oracle instead (measured 1.36×). docs/demand.md has the argument and the figures."""

from __future__ import annotations

import pytest

from jobs.tracking import REPO
from jobs.train import read
from models.demand.config import DemandConfig
from models.demand.evaluate import evaluate


@pytest.mark.heavy
def test_quality_bars_on_the_small_lake(small_lake):
    config = DemandConfig.from_yaml(REPO / "configs" / "demand.yaml")
    data, truth = read("demand", config, small_lake)
    evaluation, _ = evaluate(data, config, truth)
    m = evaluation.metrics
    assert m["wrmsse"] <= 0.75 * m["wrmsse_seasonal_naive"], m
    assert m["wrmsse"] <= 1.15 * m["wrmsse_oracle"], m
    assert 0.7 <= m["interval_coverage_p10_p90"] <= 0.9, m
    assert m["mae_new_sku_launched_before_origin"] <= 1.5 * m["mae_new_sku_launched_before_origin_oracle"], m
    assert m["mae_new_sku_launched_after_origin"] <= 1.5 * m["mae_new_sku_launched_after_origin_attribute_oracle"], m
