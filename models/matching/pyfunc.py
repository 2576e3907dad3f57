"""The matching predictor as an MLflow pyfunc model. Input rows: `member_id`, optionally
`channel` (online / offline) and `k` (default 10). Output: one row per recommended item —
member_id, rank, sku_id, score, fallback (empty when the ranker answered)."""

from __future__ import annotations

import mlflow.pyfunc
import pandas as pd


class MatchingPyfunc(mlflow.pyfunc.PythonModel):
    # the predictor contract this version speaks (models/family.py): serving and batch scoring
    # refuse a version whose contract they do not speak, instead of probing for methods
    api_version = 1

    @property
    def predictor(self):
        """What serving and batch scoring call: recommend(member, k, channel), audience(...), the snapshot's members."""
        return self.recommender

    def load_context(self, context) -> None:
        from models.matching.recommender import MatchingRecommender

        self.recommender = MatchingRecommender.load(context.artifacts["recommender"])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        return recommend_rows(self.recommender, model_input)


def recommend_rows(recommender, rows: pd.DataFrame) -> pd.DataFrame:
    """Recommendations for every input row; raises ValueError naming what is missing or wrong."""
    if "member_id" not in rows.columns:
        raise ValueError("input rows need a member_id column (optional: channel, k)")
    out = []
    for row in rows.to_dict("records"):
        channel = row.get("channel")
        channel = None if channel is None or (isinstance(channel, float) and channel != channel) else str(channel)
        k = row.get("k")
        k = 10 if k is None or (isinstance(k, float) and k != k) else int(k)
        answer = recommender.recommend(str(row["member_id"]), k, channel)
        for rank, item in enumerate(answer.items, start=1):
            out.append({"member_id": answer.member_id, "rank": rank, "sku_id": item["sku_id"],
                        "score": item["score"], "fallback": answer.fallback or ""})
    return pd.DataFrame(out, columns=["member_id", "rank", "sku_id", "score", "fallback"])
