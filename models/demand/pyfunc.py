"""The demand forecaster as an MLflow pyfunc model, so any MLflow client (and `mlflow models
serve`) can score it: input rows name store_id, sku_id and dt (a day 1–28 after the model's
origin), optionally list_price / offer_discount_pct (else the planned price and promotion);
output columns p10, p50, p90."""

from __future__ import annotations

import pandas as pd
import mlflow.pyfunc


class DemandPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from models.demand.forecaster import DemandForecaster

        self.forecaster = DemandForecaster.load(context.artifacts["forecaster"])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        return score_rows(self.forecaster, model_input)


def score_rows(forecaster, rows: pd.DataFrame) -> pd.DataFrame:
    """p10/p50/p90 for rows of store_id, sku_id, dt; raises ValueError naming what is missing."""
    missing = [c for c in ("store_id", "sku_id", "dt") if c not in rows.columns]
    if missing:
        raise ValueError(f"input rows need columns {', '.join(missing)}")
    rows = rows.assign(dt=pd.to_datetime(rows["dt"]).dt.date)
    if not {"list_price", "offer_discount_pct"} <= set(rows.columns):
        # each store × SKU × day priced once: a row asked twice must not be merged twice (one answer per input row)
        keys = rows[["store_id", "sku_id", "dt"]].drop_duplicates()
        planned = pd.concat([forecaster.planned_rows(g[["store_id", "sku_id"]], [day]) for day, g in keys.groupby("dt", sort=False)])
        rows = rows.drop(columns=[c for c in ("list_price", "offer_discount_pct") if c in rows]).merge(
            planned, on=["store_id", "sku_id", "dt"], how="left")
    p50 = forecaster.predict(rows)
    p10, p90 = forecaster.intervals(p50)
    return pd.DataFrame({"p10": p10, "p50": p50, "p90": p90})
