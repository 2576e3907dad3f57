"""The matching family as the platform sees it (models/family.py): its gate, metrics, memory and
the checks on a loaded recommender."""

from __future__ import annotations

import math

import numpy as np

from models.family import Family, Footprint, Gate



def smoke_test(recommender) -> None:
    member = recommender.state.members["member_id"].iat[0]
    if not recommender.recommend(member, 3).items:
        raise ValueError("smoke test: no recommendation")


def sanity(recommender, sample: int) -> list[str]:
    """Ten recommendations for `sample` members spread over the snapshot: some, with finite scores."""
    members = recommender.state.members["member_id"]
    problems = []
    for member in members.iloc[np.linspace(0, len(members) - 1, min(sample, len(members))).astype(int)]:
        items = recommender.recommend(member, 10).items
        if not items:
            problems.append(f"member {member}: no recommendation")
        elif any(not math.isfinite(float(i["score"])) for i in items):
            problems.append(f"member {member}: a score that is not finite")
    return problems[:5]


FAMILY = Family(
    name="matching",
    config_ref="models.matching.config:MatchingConfig",
    gate=Gate(metric="ndcg_at_10", higher_is_better=True, beat=["ndcg_at_10_popularity"]),
    headline=("ndcg_at_10", "ndcg_at_10_popularity", "ndcg_at_10_segment_popularity", "ndcg_at_10_popularity_unseen",
              "ndcg_at_10_oracle", "ndcg_at_10_diff_best_baseline", "ndcg_at_10_diff_best_baseline_ci_low",
              "ndcg_at_10_diff_best_baseline_ci_high", "recall_at_10", "candidate_recall", "map_at_10",
              "catalogue_coverage", "audience_auc_new_sku", "audience_auc_new_sku_segment_popularity"),
    served_metrics=("ndcg_at_10", "ndcg_at_10_popularity", "recall_at_10", "candidate_recall"),
    date_word="data date",
    memory=Footprint("interactions", 3.5, 215.0),
    api_version=1, smoke_test=smoke_test, sanity=sanity,
    api_ref="models.matching.api:API", training_ref="models.matching.training",
    summary="Matching: candidates from seven sources, a LambdaRank ranker, audiences for new products.",
)
