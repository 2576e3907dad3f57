"""The demand family's quality bars (issue 3) on the small lake (seed 42), the smallest scale at
which they hold with a margin (on tiny the ratio to seasonal naive sits at 0.74 against 0.75).
Measured with configs/demand.yaml (150 rounds): wrmsse 0.66× seasonal naive, 1.045× oracle,
coverage 0.81, new SKUs with some history 1.36× the oracle's error. The bar for SKUs launching after the origin (2.5×) is
not met yet and not asserted: see docs/demand.md."""

from __future__ import annotations

import pytest

from jobs.tracking import REPO
from jobs.train_demand import read_demand_data
from models.demand.config import DemandConfig
from models.demand.evaluate import evaluate


@pytest.mark.heavy
def test_quality_bars_on_the_small_lake(small_lake):
    data, truth = read_demand_data(small_lake)
    evaluation, _ = evaluate(data, DemandConfig.from_yaml(REPO / "configs" / "demand.yaml"), truth)
    m = evaluation.metrics
    assert m["wrmsse"] <= 0.75 * m["wrmsse_seasonal_naive"], m
    assert m["wrmsse"] <= 1.15 * m["wrmsse_oracle"], m
    assert 0.7 <= m["interval_coverage_p10_p90"] <= 0.9, m
    assert m["mae_new_sku_launched_before_origin"] <= 1.5 * m["mae_new_sku_launched_before_origin_oracle"], m
