"""The demand forecaster as an MLflow pyfunc model, so any MLflow client (and `mlflow models
serve`) can score it: input rows name store_id, sku_id and dt (a day 1–28 after the model's
origin), optionally list_price / offer_discount_pct (else the planned price and promotion);
output columns p10, p50, p90."""

from __future__ import annotations

import mlflow.pyfunc
import numpy as np
import pandas as pd


class DemandPyfunc(mlflow.pyfunc.PythonModel):
    # the predictor contract this version speaks (models/family.py): serving and batch scoring
    # refuse a version whose contract they do not speak, instead of probing for methods
    api_version = 1

    @property
    def predictor(self):
        """What serving and batch scoring call: forecast_arrays (the API's batched forecasts), forecast, planned_prices, predict, intervals, the panel's series."""
        return self.forecaster

    def load_context(self, context) -> None:
        from models.demand.forecaster import DemandForecaster

        self.forecaster = DemandForecaster.load(context.artifacts["forecaster"])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        return score_rows(self.forecaster, model_input)


def score_rows(forecaster, rows: pd.DataFrame) -> pd.DataFrame:
    """p10/p50/p90 for rows of store_id, sku_id, dt; raises ValueError naming what is missing.
    Rows without list_price / offer_discount_pct get the planned ones, gathered per row from the
    model's plan table (as served forecasts are); a row outside it (a day past the horizon, a
    store or SKU the plan does not know) has them computed day by day instead."""
    missing = [c for c in ("store_id", "sku_id", "dt") if c not in rows.columns]
    if missing:
        raise ValueError(f"input rows need columns {', '.join(missing)}")
    days = pd.to_datetime(rows["dt"]).to_numpy("datetime64[D]")
    asked = {"store_id": rows["store_id"].to_numpy(object), "sku_id": rows["sku_id"].to_numpy(object), "dt": days}
    if {"list_price", "offer_discount_pct"} <= set(rows.columns):
        asked.update(list_price=rows["list_price"].to_numpy(float), offer_discount_pct=rows["offer_discount_pct"].to_numpy(float))
    else:
        planned = forecaster.planned_prices(asked["store_id"], asked["sku_id"], days)
        if planned is None:
            planned = planned_each_day(forecaster, rows.assign(dt=days.astype(object)))
        asked["list_price"], asked["offer_discount_pct"] = planned
    p50 = forecaster.predict(asked)
    p10, p90 = forecaster.intervals(p50)
    return pd.DataFrame({"p10": p10, "p50": p50, "p90": p90})


def planned_each_day(forecaster, rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The planned prices of rows outside the plan table, computed day by day; each store × SKU
    × day priced once, so a row asked twice gets one answer per input row."""
    keys = rows[["store_id", "sku_id", "dt"]].drop_duplicates()
    planned = pd.concat([forecaster.planned_rows(g[["store_id", "sku_id"]], [day]) for day, g in keys.groupby("dt", sort=False)])
    priced = rows[["store_id", "sku_id", "dt"]].merge(planned, on=["store_id", "sku_id", "dt"], how="left")
    return priced["list_price"].to_numpy(float), priced["offer_discount_pct"].to_numpy(float)
