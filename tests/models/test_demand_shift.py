"""The guard issue 20 asks for: on data the generator's world does not give the model for free (a
short history and a level that shifts), the demand family must not lose to the 28-day moving
average a brand computes in a spreadsheet.

The lake: the tiny lake's last 120 days, with every series' units × 1.8 over the last 50 (a
brand whose sales jump: a new channel, a price cut across the range). Measured on 2026-12-03 the
family LOSES here (wrmsse 0.988 against the moving average's 0.969 on the test's tiny lake, seed 7;
0.985 against 0.975 on seed 42, where its ratio to the best baseline is 1.016, 95 % CI [1.006,
1.025]: outside noise), so the test is marked as an expected failure,
strictly: the day the family stops losing, the test passes, the mark fails the run, and whoever
fixed it removes the mark. The level falling instead (× 0.5 over the last 70 of 150 days) the
family wins (0.380 against 0.549); that case is asserted plainly."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from jobs.tracking import REPO
from jobs.train import read
from models.demand.config import DemandConfig
from models.demand.evaluate import evaluate


def _shifted(lake, days: int, shifted_days: int, factor: float):
    data, _ = read("demand", DemandConfig(), lake)
    last = max(data.demand["dt"])
    demand = data.demand[data.demand["dt"] > last - dt.timedelta(days=days)].copy()
    later = demand["dt"] > last - dt.timedelta(days=shifted_days)
    demand.loc[later, "units_sold"] = (demand.loc[later, "units_sold"] * factor).round()
    return dataclasses.replace(data, demand=demand)


def _metrics(data) -> dict[str, float]:
    evaluation, _ = evaluate(data, DemandConfig.from_yaml(REPO / "configs" / "demand.yaml"))
    return evaluation.metrics


def test_a_falling_level_on_a_short_history_does_not_beat_the_model(tiny_lake, ray_session):
    m = _metrics(_shifted(tiny_lake, 150, 70, 0.5))
    assert m["wrmsse"] < m["wrmsse_moving_average"] and m["wrmsse_ratio_best_baseline_ci_high"] < 1, m


@pytest.mark.xfail(strict=True, reason="issue 20: after a level jump on a short history the family still loses "
                                       "to the 28-day moving average (measured 0.988 vs 0.969)")
def test_a_rising_level_on_a_short_history_does_not_beat_the_model(tiny_lake, ray_session):
    m = _metrics(_shifted(tiny_lake, 120, 50, 1.8))
    assert m["wrmsse"] <= m["wrmsse_moving_average"], m
