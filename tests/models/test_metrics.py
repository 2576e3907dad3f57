"""Forecast metrics on hand-computed examples."""

from __future__ import annotations

import datetime as dt
import math

import pandas as pd
import pytest

from models.metrics import bias, interval_coverage, interval_coverage_units, wape, wrmsse


def _frame(values: dict[str, list[float]], start: dt.date, price: float = 10.0) -> pd.DataFrame:
    rows = []
    for sku, ys in values.items():
        for i, y in enumerate(ys):
            rows.append({"store_id": "S", "sku_id": sku, "dt": start + dt.timedelta(days=i), "units_sold": y,
                         "revenue_net": y * price})
    return pd.DataFrame(rows)


def test_wrmsse_matches_a_hand_computation():
    # A: starts selling on day 2: diffs after the first sale are (2-1), (0-2), (3-0) -> scale = 14/3
    history = _frame({"A": [0, 1, 2, 0, 3], "B": [5, 5, 6, 5, 5]}, dt.date(2025, 1, 1))
    holdout = _frame({"A": [1, 2], "B": [5, 7]}, dt.date(2025, 1, 6))
    holdout["prediction"] = [2, 2, 5, 5]
    rmsse_a = math.sqrt(((1 - 2) ** 2 + 0) / 2 / (14 / 3))
    rmsse_b = math.sqrt((0 + 4) / 2 / (2 / 4))
    w_a, w_b = 60.0, 260.0  # revenue over the (whole, < 28 days) history
    expected = (rmsse_a * w_a + rmsse_b * w_b) / (w_a + w_b)
    assert wrmsse(history, holdout) == pytest.approx(expected)


def test_wrmsse_ignores_series_without_sales_or_weight():
    history = _frame({"A": [0, 0, 0], "B": [1, 2, 1]}, dt.date(2025, 1, 1))
    holdout = _frame({"A": [3], "B": [1]}, dt.date(2025, 1, 4))
    holdout["prediction"] = [0, 1]
    assert wrmsse(history, holdout) == 0.0
    assert math.isnan(wrmsse(history[history["sku_id"] == "A"], holdout))


def test_wape_bias_coverage():
    y = pd.Series([10.0, 0.0, 5.0])
    f = pd.Series([8.0, 1.0, 5.0])
    assert wape(y, f) == pytest.approx(3 / 15)
    assert bias(y, f) == pytest.approx(-1 / 15)
    assert interval_coverage(y, pd.Series([9, 0, 6]), pd.Series([11, 1, 7])) == pytest.approx(2 / 3)
    # by units: the zero row is covered but weighs nothing; the 5 units outside the band count
    assert interval_coverage_units(y, pd.Series([9, 0, 6]), pd.Series([11, 1, 7])) == pytest.approx(10 / 15)
    assert math.isnan(interval_coverage_units(pd.Series([0.0]), pd.Series([0]), pd.Series([1])))
    assert math.isnan(wape(pd.Series([0.0]), pd.Series([1.0])))
