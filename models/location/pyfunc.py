"""The location model as an MLflow pyfunc model. Input rows name a candidate `site_id` (its
features come from the version's site snapshot) or carry every feature column themselves;
`format` and `store_age_days` are optional (default: the configured format, a mature store).
Output: `predicted_revenue`, CNY per year."""

from __future__ import annotations

import mlflow.pyfunc
import pandas as pd


class LocationPyfunc(mlflow.pyfunc.PythonModel):
    # the predictor contract this version speaks (models/family.py): serving and batch scoring
    # refuse a version whose contract they do not speak, instead of probing for methods
    api_version = 1

    @property
    def predictor(self):
        """What serving and batch scoring call: recommend(city, k, ...), plan(city), cities, sites, stores."""
        return self.recommender

    def load_context(self, context) -> None:
        from models.location.recommender import SiteRecommender

        self.recommender = SiteRecommender.load(context.artifacts["recommender"])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        return score_sites(self.recommender, model_input)


def score_sites(recommender, rows: pd.DataFrame) -> pd.DataFrame:
    """Predicted revenue per input row; raises ValueError naming what is missing or unknown."""
    model, config = recommender.model, recommender.config
    features = [n for n in model.names if n not in ("format", "store_age_days")]
    rows = rows.reset_index(drop=True)
    if not set(features) <= set(rows.columns):
        if "site_id" not in rows.columns:
            missing = sorted(set(features) - set(rows.columns))
            raise ValueError(f"input rows need site_id or every feature column (missing {', '.join(missing[:6])}…)")
        known = recommender.sites.set_index("site_id")
        unknown = rows.loc[~rows["site_id"].isin(known.index), "site_id"].astype(str).unique()
        if len(unknown):
            raise ValueError(f"unknown site_id: {', '.join(unknown[:5])}")
        looked_up = known.loc[rows["site_id"], features].reset_index(drop=True)
        rows = pd.concat([rows.drop(columns=[c for c in features if c in rows.columns]), looked_up], axis=1)
    if "format" not in rows.columns:
        rows["format"] = config.recommender.format
    if "store_age_days" not in rows.columns:
        rows["store_age_days"] = float(config.recommender.mature_age_days)
    return pd.DataFrame({"predicted_revenue": model.predict(rows)})
