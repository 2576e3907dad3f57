"""The demand family's HTTP API (models/api.py): POST /v1/demand/forecast, P10/P50/P90 per SKU and
day for one store, with what-if prices and promotions, answered in batches; and the rules of its
`/invocations` rows."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field, ValidationError

from models.api import Answer, FamilyApi, Finite, Id, Invocations, Operation, Served, Strict, invalid, refused
from models.demand.features import MAX_HORIZON_DAYS
from models.rows import ID_SCHEMA, RowProblem, are, ids, known, numbers, require, rows_named

MAX_PRICE = 1e6
MAX_DISCOUNT = 0.9


class WhatIf(Strict):
    price: Annotated[Finite, Field(gt=0, le=MAX_PRICE, description="per unit in the brand's currency, replaces the list price")] | None = None
    discount: Annotated[Finite, Field(ge=0, le=MAX_DISCOUNT, description="fraction off")] | None = None
    promo: bool | None = Field(None, description="true: at least the typical 20 % promotion; false: none")


class ForecastRequest(Strict):
    store_id: Id
    sku_ids: list[Id] = Field(min_length=1, max_length=200)
    horizon_days: int | None = Field(None, ge=1, le=MAX_HORIZON_DAYS, description=(
        "days ahead, 1 to the served model's horizon (its config's `features.horizon`, 28 by default; "
        "a request beyond it answers 422 saying the range); omitted: the whole horizon"))
    what_if: WhatIf | None = None


class ForecastDay(BaseModel):
    date: dt.date
    p10: float
    p50: float
    p90: float


class SkuForecast(BaseModel):
    sku_id: str
    days: list[ForecastDay]


class ForecastResponse(BaseModel):
    model_version: str
    store_id: str
    origin: dt.date
    forecasts: list[SkuForecast]


def forecast(served: Served, request: dict) -> Answer:
    return forecasts(served, [request])[0]


def forecasts(served: Served, requests: list[dict]) -> list[Answer]:
    """Answers to several forecast requests, computed together (one feature build, one booster
    call); each request gets its own answer, 4xx included."""
    answers: list[Answer | None] = [None] * len(requests)
    asks, valid = [], []
    for i, request in enumerate(requests):
        try:
            req = ForecastRequest.model_validate(request)
        except ValidationError as exc:
            answers[i] = invalid(exc)
            continue
        valid.append((i, req))
        asks.append((req.store_id, list(dict.fromkeys(req.sku_ids)), req.horizon_days,
                     req.what_if.model_dump(exclude_none=True) if req.what_if else None))
    forecaster = served.predictor
    results = forecaster.forecast_arrays(asks) if asks else []
    for (i, req), result in zip(valid, results):
        if isinstance(result, (KeyError, ValueError)):
            answers[i] = refused(result)
            continue
        answers[i] = (200, {"model_version": served.version, "store_id": req.store_id,
                            "origin": forecaster.origin_.isoformat(), "forecasts": _per_sku(result)})
    return answers


def _per_sku(forecast) -> list[dict]:
    """The response's forecasts from a forecast's day × SKU matrices."""
    dates = [d.isoformat() for d in forecast.days]
    p10, p50, p90 = ([[round(x, 4) for x in column] for column in m.T.tolist()]
                     for m in (forecast.p10, forecast.p50, forecast.p90))
    return [{"sku_id": sku, "days": [{"date": d, "p10": a, "p50": b, "p90": c}
                                     for d, a, b, c in zip(dates, p10[i], p50[i], p90[i])]}
            for i, sku in enumerate(forecast.sku_ids)]


ROW_SCHEMA = {"type": "object", "required": ["store_id", "sku_id", "dt"],
              "properties": {"store_id": ID_SCHEMA, "sku_id": ID_SCHEMA, "dt": {"type": "string", "format": "date"},
                             "list_price": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_PRICE},
                             "offer_discount_pct": {"type": "number", "minimum": 0, "maximum": MAX_DISCOUNT}},
              "dependentRequired": {"list_price": ["offer_discount_pct"], "offer_discount_pct": ["list_price"]}}


def check_rows(forecaster, rows: pd.DataFrame) -> pd.DataFrame:
    """store_id and sku_id known to the model, dt 1..horizon days after its origin; list_price and
    offer_discount_pct both or neither, finite and in the what-if's ranges. It reads only what
    every version holds (the forecaster's learned tables), so it guards older versions too."""
    require(rows, ("store_id", "sku_id", "dt"), " (optional: list_price and offer_discount_pct)")
    stores, skus = ids(rows, "store_id"), ids(rows, "sku_id")
    tables = forecaster.tables_
    known(stores, tables["stores"]["store_id"], "store_id")
    known(skus, tables["products"]["sku_id"], "sku_id")
    days = pd.to_datetime(rows["dt"], errors="coerce", format="mixed")
    horizon = forecaster.config.features.horizon
    ahead = (days.dt.normalize() - pd.Timestamp(forecaster.origin_)).dt.days.to_numpy(float)
    bad = ~np.isfinite(ahead) | (ahead < 1) | (ahead > horizon)
    if bad.any():
        raise RowProblem(409 if np.isfinite(ahead[bad]).all() else 422,
                         f"dt must be a date 1–{horizon} days after the model's origin {forecaster.origin_} "
                         f"(YYYY-MM-DD); {rows_named(bad)} {are(bad)} not")
    priced = [c for c in ("list_price", "offer_discount_pct") if c in rows.columns]
    if len(priced) == 1:
        raise RowProblem(422, "give both list_price and offer_discount_pct, or neither (the planned ones)")
    out = rows.assign(store_id=stores, sku_id=skus)
    if priced:
        out["list_price"] = numbers(rows, "list_price", 0, MAX_PRICE, low_open=True)
        out["offer_discount_pct"] = numbers(rows, "offer_discount_pct", 0, MAX_DISCOUNT)
    return out


API = FamilyApi(
    operations=(Operation("POST", "/forecast", "forecasts", forecast, ForecastResponse, ForecastRequest,
                          (404, 409, 422, 503), many=forecasts),),
    # the pyfunc answers p10 / p50 / p90 for each row, in order
    invocations=Invocations(ROW_SCHEMA, check_rows, row_per_row=True),
)
