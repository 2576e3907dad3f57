"""The location family's configuration (configs/location.yaml)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from models.config import FamilyConfig
from models.location.features import FORMATS, SiteFeatureSpec


class TrainingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    min_trading_days: int = Field(90, ge=1, description="stores with fewer days of sales are left out")
    seed: int = 1
    params: dict[str, Any] = Field(default_factory=lambda: {
        "objective": "regression", "learning_rate": 0.03, "num_leaves": 4, "min_data_in_leaf": 10,
        "feature_fraction": 0.7, "lambda_l2": 5.0})
    num_boost_round: int = Field(600, ge=1)


class EvaluationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    folds: int = Field(5, ge=2, le=50, description="spatial folds (fewer when the lake has fewer groups)")
    group_by: Literal["city", "cell"] = "city"
    cell_resolution: int = Field(5, ge=0, le=10, description="H3 resolution of the groups when group_by is cell")
    ndcg_k: int = Field(10, ge=1)
    gravity_decay_km: float = Field(1.0, gt=0, description="distance decay of the gravity baseline")
    gravity_radius_km: float = Field(2.5, gt=0)


class CannibalisationConfig(BaseModel):
    """Huff-style share model over own stores: a store x keeps base_x · (1 + s·P) / (1 + s·P')
    of its revenue when the pull of the brand's other stores on it rises from P to P', where a
    store at d km pulls exp(-d / decay_km) (nothing beyond max_km)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    strength: float = Field(0.5, ge=0, description="prior; replaced by the estimate when there is one")
    decay_km: float = Field(1.2, gt=0, description="prior; replaced by the estimate when there is one")
    max_km: float = Field(6.0, gt=0)
    estimate: bool = Field(True, description="estimate strength and decay from the brand's openings and closings")
    min_observations: int = Field(30, ge=1, description="neighbour observations an estimate needs")


class RecommenderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal[FORMATS] = Field("mall", description="the format a recommended store is planned in")
    mature_age_days: int = Field(1095, ge=0, description="a recommendation predicts a mature year's revenue")
    cannibalisation: CannibalisationConfig = CannibalisationConfig()
    service_radius_km: float = Field(1.5, gt=0, description="coverage objective: who a store serves")
    max_k: int = Field(50, ge=1)


class LocationConfig(FamilyConfig):
    """Everything the location family needs; unknown keys are refused."""

    features: SiteFeatureSpec = SiteFeatureSpec()
    training: TrainingConfig = TrainingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    recommender: RecommenderConfig = RecommenderConfig()
