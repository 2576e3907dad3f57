"""The demand family's configuration (configs/demand.yaml)."""

from __future__ import annotations

import datetime as dt
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
    """Rolling origins: `origins` of them, `spacing_days` apart (None: one horizon apart), the
    last one `horizon` days before the lake's end. A model is fitted at the first origin and again
    whenever an origin is `refit_days` or more after the last fit; the origins in between forecast
    with that model from their own day (DemandForecaster.as_of), as a model of that age would."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    origins: int = Field(2, ge=1, le=26)
    spacing_days: int | None = Field(None, ge=1, le=91)
    refit_days: int = Field(28, ge=1, le=365)

    def spacing(self, horizon: int) -> int:
        return self.spacing_days or horizon

    def origin_days(self, last_day: dt.date, horizon: int) -> list[dt.date]:
        """The origins, oldest first, for a lake whose last day is `last_day`."""
        last = last_day - dt.timedelta(days=horizon)
        return [last - dt.timedelta(days=self.spacing(horizon) * k) for k in range(self.origins - 1, -1, -1)]

    def days_scored(self, horizon: int) -> int:
        """How many of the lake's last days the holdouts cover."""
        return horizon + self.spacing(horizon) * (self.origins - 1)


class DemandConfig(FamilyConfig):
    """Everything the demand family needs; unknown keys are refused."""

    features: FeatureSpec = FeatureSpec()
    training: TrainingConfig = TrainingConfig()
    intervals: IntervalConfig = IntervalConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
