"""The family contract: what a model family declares once, so that the jobs, the promotion gate,
serving and the command line can treat every family by name instead of keeping their own tables.

Each family package has a `family.py` with its `FAMILY` (this module's `Family`) and the checks
that take its predictor; `models/families.py` is the registry that lists them. A new family is a
package and one line in the registry.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field

from lake.store import Lake
from models.config import FamilyConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


class Gate(BaseModel):
    """One family's promotion gate."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str = Field(description="the main metric, as logged by the family's training run")
    higher_is_better: bool
    beat: list[str] = Field(default_factory=list, description="baseline metrics the candidate must beat")
    champion_tolerance: float = Field(0.02, ge=0, le=1,
                                      description="how much worse than the champion (relative) is still accepted")


@dataclass(frozen=True)
class Footprint:
    """A training job's peak memory (all its processes: the job and its training tasks), as a
    fixed part plus a part per row of the curated table that drives it. Fitted on measured peaks at
    two scales (BENCHMARKS.md, "The daily retrain"); the daily retrain reserves it from Ray so
    families that do not fit on a node together wait for each other instead of running it out of
    memory."""

    table: str
    base_gb: float
    bytes_per_row: float

    def bytes(self, lake: Lake) -> int:
        return int(self.base_gb * 2**30 + self.bytes_per_row * lake.count_rows("curated", self.table))


class IncompatibleVersion(ValueError):
    """A registered version whose predictor contract this code does not speak."""


@dataclass(frozen=True)
class Family:
    """One model family.

    `config_ref` ("module:Class") and the checks are imported when first used: listing the
    families must not import every family's model code."""

    name: str
    config_ref: str  # its FamilyConfig subclass
    gate: Gate  # the built-in promotion gate (configs/retrain.yaml may replace it)
    headline: tuple[str, ...]  # the metrics `quanyu train` and the retrain's summary print
    served_metrics: tuple[str, ...]  # the metrics /v1/models shows next to the served version
    date_word: str  # what the last day of its training data is called
    memory: Footprint
    api_version: int  # the predictor contract serving and batch scoring speak with this family's versions
    smoke_test: Callable[[Any], None]  # one real request on a freshly loaded predictor; raises when it cannot answer
    sanity: Callable[[Any, int], list[str]]  # what is wrong with a candidate's answers on a sample
    api_ref: str  # "module:NAME" of its FamilyApi (models/api.py): the endpoints serving gives it
    training_ref: str  # the module of its training (models/training.py says what it holds)
    summary: str = ""  # one line: what it predicts (`quanyu train <family> --help`)

    def training(self) -> Any:
        """Its training module (inputs, prepare, train, holdout), imported when first asked for."""
        return importlib.import_module(self.training_ref)

    def api(self) -> Any:
        """Its HTTP API (a models.api.FamilyApi), imported when first asked for."""
        module, name = self.api_ref.split(":")
        return getattr(importlib.import_module(module), name)

    @property
    def registered_name(self) -> str:
        return f"quanyu-{self.name}"

    def predictor(self, pyfunc) -> Any:
        """The predictor inside a loaded version (its pyfunc's `.predictor`), which runs the
        version's own code. Raises IncompatibleVersion when the version speaks another predictor
        contract than `api_version` (or none: registered before contracts)."""
        inner = pyfunc.unwrap_python_model()
        spoken = getattr(inner, "api_version", None)
        if spoken != self.api_version:
            said = f"contract {spoken}" if spoken is not None else "no contract (registered before contracts existed)"
            raise IncompatibleVersion(f"its predictor speaks {said}; this Quanyu speaks {self.name} contract "
                                      f"{self.api_version}: train the family again to serve it")
        return inner.predictor

    def config_class(self) -> type[FamilyConfig]:
        module, name = self.config_ref.split(":")
        return getattr(importlib.import_module(module), name)

    def config(self, path: str | None = None) -> tuple[FamilyConfig, str | None]:
        """The config from `path`, else configs/<family>.yaml, else the defaults; and its path."""
        default = CONFIGS / f"{self.name}.yaml"
        path = path or (str(default) if default.exists() else None)
        cls = self.config_class()
        return (cls.from_yaml(path) if path else cls()), path
