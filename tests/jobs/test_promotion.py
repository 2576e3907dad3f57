"""The promotion rule on its own (jobs/promotion.decide, below_baseline): every branch from a table
of metrics, without training anything."""

from __future__ import annotations

import math

import pytest

from jobs.promotion import Gate, below_baseline, decide

LOWER = Gate(metric="wrmsse", higher_is_better=False, beat=["wrmsse_naive"], champion_tolerance=0.02)
HIGHER = Gate(metric="ndcg", higher_is_better=True, beat=["ndcg_pop"], champion_tolerance=0.02)


@pytest.mark.parametrize("gate, metrics, champion, sanity, promote, said", [
    (LOWER, {"wrmsse": 0.6, "wrmsse_naive": 0.8}, None, [], True, "first champion"),
    (LOWER, {"wrmsse": 0.9, "wrmsse_naive": 0.8}, None, [], False, "does not beat wrmsse_naive 0.8000"),
    (LOWER, {"wrmsse": 0.8, "wrmsse_naive": 0.8}, None, [], False, "does not beat"),  # a tie does not beat
    (LOWER, {"wrmsse": 0.6}, None, [], False, "baseline wrmsse_naive missing"),
    (LOWER, {"wrmsse": math.nan, "wrmsse_naive": 0.8}, None, [], False, "no finite wrmsse"),
    (LOWER, {"wrmsse": 0.6, "wrmsse_naive": math.nan}, None, [], False, "baseline wrmsse_naive missing"),
    (LOWER, {"wrmsse": 0.612, "wrmsse_naive": 0.8}, {"wrmsse": 0.6}, [], True, "within tolerance of champion v3"),
    (LOWER, {"wrmsse": 0.613, "wrmsse_naive": 0.8}, {"wrmsse": 0.6}, [], False, "beyond the 2% tolerance"),
    (HIGHER, {"ndcg": 0.5, "ndcg_pop": 0.4}, {"ndcg": 0.51}, [], True, "within tolerance"),
    (HIGHER, {"ndcg": 0.49, "ndcg_pop": 0.4}, {"ndcg": 0.51}, [], False, "worse than champion v3's 0.5100"),
    (HIGHER, {"ndcg": 0.5, "ndcg_pop": 0.6}, None, [], False, "ndcg 0.5000 does not beat ndcg_pop 0.6000"),
    (HIGHER, {"ndcg": 0.5, "ndcg_pop": 0.4}, None, ["a forecast is negative"], False, "sanity: a forecast is negative"),
])
def test_decide(gate, metrics, champion, sanity, promote, said):
    decision = decide(gate, metrics, champion, "3" if champion else None, sanity)
    assert decision.promote is promote and said in decision.reason, decision.reason


def test_below_baseline_names_what_was_not_beaten_and_nothing_else():
    assert below_baseline("matching", {"ndcg_at_10": 0.3, "ndcg_at_10_popularity": 0.2}) is None
    why = below_baseline("matching", {"ndcg_at_10": 0.156, "ndcg_at_10_popularity": 0.176})
    assert why == "ndcg_at_10 0.1560 does not beat ndcg_at_10_popularity 0.1760"
    assert below_baseline("demand", {"wrmsse": 1.0, "wrmsse_seasonal_naive": 1.2, "wrmsse_moving_average": 0.9,
                                     "wrmsse_tsb": 1.1}) == "wrmsse 1.0000 does not beat wrmsse_moving_average 0.9000"
    assert "wrmsse_tsb 0.9500" in below_baseline("demand", {"wrmsse": 1.0, "wrmsse_seasonal_naive": 1.2,
                                                           "wrmsse_moving_average": 1.1, "wrmsse_tsb": 0.95})
