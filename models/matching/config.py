"""The matching family's configuration (configs/matching.yaml): candidate generation, the
ranker's training and the evaluation."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from models.config import FamilyConfig
from models.matching.state import CandidateSpec


class TrainingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_members: int = Field(8000, ge=10, description="members with a purchase in the label window sampled for training")
    seed: int = 1
    params: dict[str, Any] = Field(default_factory=lambda: {
        "objective": "lambdarank", "learning_rate": 0.05, "num_leaves": 31, "min_data_in_leaf": 50,
        "feature_fraction": 0.8, "lambdarank_truncation_level": 20, "eval_at": [10]})
    num_boost_round: int = Field(200, ge=1)
    label_windows: int = Field(1, ge=1, le=12, description="at most this many holdout-length label windows, "
                               "each ending where the next begins, stacked until min_training_members bought "
                               "in them: more members and purchases to learn from on small data")
    min_training_members: int = Field(2000, ge=1, description="member windows with a purchase that are enough: "
                                      "no earlier window is added once this many are in")
    member_batch: int = Field(2000, ge=1, description="members per Ray task of candidate generation")


class EvaluationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    holdout_days: int = Field(14, ge=1)
    k: int = Field(10, ge=1)
    max_members: int = Field(8000, ge=10, description="holdout members sampled for evaluation")
    audience_min_buyers: int = Field(5, ge=1, description="new SKUs with fewer holdout buyers are not scored")


class MatchingConfig(FamilyConfig):
    """Everything the matching family needs; unknown keys are refused."""

    candidates: CandidateSpec = CandidateSpec()
    training: TrainingConfig = TrainingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
