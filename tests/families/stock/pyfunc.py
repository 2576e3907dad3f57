"""The stock family's MLflow pyfunc: rows of sku_id → units a day."""

from __future__ import annotations

import json
from dataclasses import dataclass

import mlflow
import pandas as pd


@dataclass
class Levels:
    origin: str
    units: dict[str, float]


class StockPyfunc(mlflow.pyfunc.PythonModel):
    api_version = 1

    @property
    def predictor(self) -> Levels:
        return self.levels

    def load_context(self, context) -> None:
        with open(context.artifacts["levels"]) as f:
            self.levels = Levels(**json.load(f))

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        return pd.DataFrame({"units": [self.levels.units[str(s)] for s in model_input["sku_id"]]})
