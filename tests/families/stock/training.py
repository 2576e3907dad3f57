"""The stock family's training (models/training.py): each SKU's mean units a day over its last
`weeks` weeks, all stores and shops together; judged on the last `holdout_days` against
forecasting zero."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field

from models.config import FamilyConfig
from models.report import Report
from models.training import Input, Trained, last_day


class StockConfig(FamilyConfig):
    weeks: int = Field(4, ge=1, le=52)
    holdout_days: int = Field(7, ge=1, le=28)


def inputs(config: StockConfig, holdout: bool = False) -> dict[str, Input]:
    return {"demand": Input("curated", "demand_daily", ("dt", "sku_id", "units_sold"),
                            days=7 * config.weeks + config.holdout_days, needed="run quanyu data merge first")}


def prepare(frames: dict, config: StockConfig) -> pd.DataFrame:
    daily = frames["demand"].groupby(["dt", "sku_id"], as_index=False)["units_sold"].sum()
    daily.attrs["last_day"] = last_day(frames, "demand")
    return daily


def levels(daily: pd.DataFrame, end: dt.date, weeks: int) -> pd.Series:
    """Mean units a day of each SKU over the `weeks` weeks up to `end`."""
    window = daily[(daily["dt"] > end - dt.timedelta(days=7 * weeks)) & (daily["dt"] <= end)]
    return window.groupby("sku_id")["units_sold"].sum() / (7 * weeks)


def holdout(daily: pd.DataFrame, config: StockConfig, executor) -> Report:
    end = daily.attrs["last_day"]
    cutoff = end - dt.timedelta(days=config.holdout_days)
    actual = daily[daily["dt"] > cutoff].groupby("sku_id")["units_sold"].sum() / config.holdout_days
    level = levels(daily, cutoff, config.weeks).reindex(actual.index).fillna(0.0)
    return Report({"mae": float(np.abs(level - actual).mean()), "mae_zero": float(actual.abs().mean())})


def train(daily: pd.DataFrame, config: StockConfig, executor, folder: Path, say) -> Trained:
    from tests.families.stock.pyfunc import StockPyfunc

    report = holdout(daily, config, executor)
    metrics = report.metrics
    end = daily.attrs["last_day"]
    level = levels(daily, end, config.weeks)
    say(f"levels of {len(level)} SKUs up to {end}; holdout MAE {metrics['mae']:.3f} (zero {metrics['mae_zero']:.3f})")
    path = folder / "levels.json"
    path.write_text(json.dumps({"origin": str(end), "units": {str(k): float(v) for k, v in level.items()}}))
    return Trained(origin=end, report=report, params={"skus": len(level)}, tags={"data_date": str(end)},
                   python_model=StockPyfunc(), artifacts={"levels": str(path)},
                   learned_from=[("demand_daily", daily, "curated")],
                   example=pd.DataFrame({"sku_id": [str(level.index[0])]}))
