"""The demand family's configuration (configs/demand.yaml)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from models.config import FamilyConfig
from models.demand.features import FeatureSpec


class TrainingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    history_days: int = Field(400, ge=56)
    seed: int = 1
    params: dict[str, Any] = Field(default_factory=lambda: {"objective": "tweedie", "tweedie_variance_power": 1.2})
    num_boost_round: int = Field(300, ge=1)
    distributed: Literal["auto", "always", "never"] = "auto"
    data_parallel_rows: int = Field(20_000_000, ge=1)


class IntervalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    lower: float = Field(0.1, gt=0, lt=0.5)
    upper: float = Field(0.9, gt=0.5, lt=1)
    buckets: int = Field(10, ge=1, le=50)


class EvaluationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    origins: int = Field(2, ge=1, le=12)


class DemandConfig(FamilyConfig):
    """Everything the demand family needs; unknown keys are refused."""

    features: FeatureSpec = FeatureSpec()
    training: TrainingConfig = TrainingConfig()
    intervals: IntervalConfig = IntervalConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
