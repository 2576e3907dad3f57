"""What each endpoint does with a validated request and a loaded version: plain functions, shared
by the Serve deployments, the bare-FastAPI benchmark peer and the tests. Each returns
(HTTP status, JSON body); a request the model cannot answer is a 4xx with a message, never a 500."""

from __future__ import annotations

import io
import json
import logging

import numpy as np
import pandas as pd
from pydantic import ValidationError

from lake.settings import DEFAULT_CURRENCY
from models.errors import BeyondVersion, UnknownName
from serving import schemas
from serving.families import Loaded

Answer = tuple[int, dict]
logger = logging.getLogger("quanyu.serving")


def internal_error(family: str) -> str:
    """What a caller is told of a bug: nothing internal, and where the operator finds the traceback."""
    return (f"internal error in quanyu-{family}; its traceback is in the replica's log (Ray's "
            "session_latest/logs/serve/ folder, under QUANYU_HOME/ray for a local server)")


def _problem(status: int, detail: str) -> Answer:
    return status, {"detail": detail}


def refused(exc: Exception) -> Answer:
    """A request the served version refused, by the kind of refusal (models/errors.py): 404 for
    a name it does not know, 409 for what it cannot do (days past its horizon, constraints its
    candidates cannot meet), 422 for a request to change; the message says which."""
    if isinstance(exc, (UnknownName, KeyError)):
        return _problem(404, str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc))
    return _problem(409 if isinstance(exc, BeyondVersion) else 422, str(exc))


def forecast(loaded: Loaded, request: dict) -> Answer:
    return forecasts(loaded, [request])[0]


def forecasts(loaded: Loaded, requests: list[dict]) -> list[Answer]:
    """Answers to several forecast requests, computed together (one feature build, one booster
    call); each request gets its own answer, 4xx included."""
    answers: list[Answer | None] = [None] * len(requests)
    asks, valid = [], []
    for i, request in enumerate(requests):
        try:
            req = schemas.ForecastRequest.model_validate(request)
        except ValidationError as exc:
            answers[i] = (422, {"detail": exc.errors(include_url=False, include_context=False)})
            continue
        valid.append((i, req))
        asks.append((req.store_id, list(dict.fromkeys(req.sku_ids)), req.horizon_days,
                     req.what_if.model_dump(exclude_none=True) if req.what_if else None))
    forecaster = loaded.predictor
    results = forecaster.forecast_arrays(asks) if asks else []
    for (i, req), result in zip(valid, results):
        if isinstance(result, (KeyError, ValueError)):
            answers[i] = refused(result)
            continue
        per_sku = _per_sku(result)
        answers[i] = (200, {"model_version": loaded.version, "store_id": req.store_id,
                            "origin": forecaster.origin_.isoformat(), "forecasts": per_sku})
    return answers


def _per_sku(forecast) -> list[dict]:
    """The response's forecasts from a forecast's day × SKU matrices."""
    dates = [d.isoformat() for d in forecast.days]
    p10, p50, p90 = ([[round(x, 4) for x in column] for column in m.T.tolist()]
                     for m in (forecast.p10, forecast.p50, forecast.p90))
    return [{"sku_id": sku, "days": [{"date": d, "p10": a, "p50": b, "p90": c}
                                     for d, a, b, c in zip(dates, p10[i], p50[i], p90[i])]}
            for i, sku in enumerate(forecast.sku_ids)]


def recommend(loaded: Loaded, request: dict) -> Answer:
    from models.matching.recommender import MatchingError

    req = schemas.RecommendRequest.model_validate(request)
    try:
        answer = loaded.predictor.recommend(req.member_id, req.k, req.channel)
    except MatchingError as exc:
        return _problem(422, str(exc))
    items = [{"sku_id": i["sku_id"], "score": i["score"]} for i in answer.items]
    return 200, {"model_version": loaded.version, "member_id": req.member_id, "items": items,
                 "fallback": answer.fallback is not None, "fallback_reason": answer.fallback}


def audience(loaded: Loaded, request: dict) -> Answer:
    req = schemas.AudienceRequest.model_validate(request)
    attributes = req.attributes.model_dump(exclude_none=True) if req.attributes else None
    try:
        answer = loaded.predictor.audience(req.k, sku_id=req.sku_id, attributes=attributes)
    except ValueError as exc:  # MatchingError among them
        return refused(exc)
    return 200, {"model_version": loaded.version, "sku_id": req.sku_id, "new_product": answer.new_product,
                 "members": answer.members, "segments": answer.segments, "notes": answer.notes}


def sites(loaded: Loaded, request: dict) -> Answer:
    from models.location.recommender import RecommendError

    req = schemas.SitesRequest.model_validate(request)
    try:
        result = loaded.predictor.recommend(req.city, req.k, min_distance_km=req.min_distance_km,
                                            max_rent=req.max_rent, exclude=req.exclude, include=req.include,
                                            objective=req.objective)
    except RecommendError as exc:  # an unknown city or site, constraints no sites meet, a request to change
        return refused(exc)
    body = result.as_dict()
    body.pop("seconds", None)
    return 200, {"model_version": loaded.version, "data_date": loaded.predictor.meta.get("data_date"),
                 "currency": _currency(loaded.predictor), **body}


def _currency(recommender) -> str:
    """The currency of a location version's amounts: its lake's (settings.yaml), kept with it."""
    return recommender.meta.get("currency", DEFAULT_CURRENCY)


def cities(loaded: Loaded, request: dict) -> Answer:
    """The cities the served location model can plan in, for the planner's city field."""
    recommender = loaded.predictor
    stores = recommender.stores.groupby("city").size()
    listed = [{"city": c, "candidates": int(len(recommender.plan(c).sites)), "stores": int(stores.get(c, 0))}
              for c in recommender.cities]
    return 200, {"model_version": loaded.version, "data_date": recommender.meta.get("data_date"),
                 "currency": _currency(recommender), "cities": listed}


def city_map(loaded: Loaded, request: dict) -> Answer:
    """Every candidate cell of one city with its score, rent and competitors, and the brand's own
    stores: the planner's map layers. Recommendations themselves come from `sites`."""
    city = schemas.CityMapRequest.model_validate(request).city
    recommender = loaded.predictor
    if city not in recommender.cities:  # the recommender's own wording, as /v1/location/recommend gives it
        return _problem(404, f"unknown city {city!r}; cities with candidate sites: {', '.join(recommender.cities)}")
    plan = recommender.plan(city)
    sites = plan.sites
    cells = [{"site_id": sid, "lat": round(la, 6), "lon": round(lo, 6), "boundary": _boundary(sid),
              "predicted_revenue": round(rev, 2), "rent_per_sqm_month": rent, "population": pop,
              "competitors": comp}
             for sid, la, lo, rev, rent, pop, comp in zip(
                 sites["site_id"].astype(str), sites["lat"].astype(float), sites["lon"].astype(float),
                 sites["predicted_revenue"].astype(float), sites["rent_per_sqm_month"].astype(float),
                 sites["population"].fillna(0).astype(float), sites["competitors"].fillna(0).astype(float))]
    stores = plan.stores
    own = [{"store_id": str(r.store_id), "lat": float(r.lat), "lon": float(r.lon),
            "format": getattr(r, "format", None),
            "revenue_annualised": _finite(getattr(r, "revenue_annualised", None))}
           for r in stores.itertuples(index=False)]
    currency = _currency(recommender)
    return 200, {"model_version": loaded.version, "data_date": recommender.meta.get("data_date"),
                 "currency": currency, "city": city,
                 "score": f"predicted revenue of a new store in the cell, {currency} per year", "cells": cells,
                 "stores": own}


def _boundary(site_id: str) -> list[tuple[float, float]] | None:
    import h3

    if not h3.is_valid_cell(site_id):
        return None  # a site id that is not an H3 cell: the page draws a dot
    return [(round(la, 6), round(lo, 6)) for la, lo in h3.cell_to_boundary(site_id)]


def _finite(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if value == value and abs(value) != float("inf") else None


def invocations(loaded: Loaded, family: str, payload: dict) -> Answer:
    """MLflow's scoring protocol on feature rows: the same parsing `mlflow models serve` does, the
    same answer `mlflow.pyfunc.load_model(...).predict` gives, as {"predictions": …}; rows are
    checked first as strictly as the family's typed endpoints (serving.rows)."""
    rows = _parse_rows(loaded, family, payload)
    return rows if isinstance(rows, tuple) else _score(loaded, family, rows)


# families whose pyfunc answers one output row per input row, in input order (demand: p10/p50/p90,
# location: predicted revenue); matching answers k rows per member, so its answers cannot be cut apart
ROW_PER_ROW = {"demand", "location"}


def invocations_many(loaded: Loaded, family: str, payloads: list[dict]) -> list[Answer]:
    """invocations() of several requests, each answered as it would be alone. When the model
    answers row per row, the checked rows of every valid request are scored in one predict call
    and each request's answer is cut from it; when that call fails or answers another number of
    rows (or the requests differ in columns or types), each request is scored alone, so one
    request can only spoil its own answer."""
    if family not in ROW_PER_ROW or len(payloads) == 1:
        return [invocations(loaded, family, p) for p in payloads]
    answers: list[Answer | None] = [None] * len(payloads)
    frames: list[tuple[int, pd.DataFrame]] = []
    for i, payload in enumerate(payloads):
        rows = _parse_rows(loaded, family, payload)
        if isinstance(rows, tuple):
            answers[i] = rows
        else:
            frames.append((i, rows))
    kinds = {tuple(zip(f.columns, map(str, f.dtypes))) for _, f in frames}
    predictions = None
    if len(frames) > 1 and len(kinds) == 1:
        union = pd.concat([f for _, f in frames], ignore_index=True)
        try:
            predictions = loaded.pyfunc.predict(union)
        except Exception:  # whatever it was, each request is scored alone below and answers for itself
            predictions = None
        if predictions is not None and len(predictions) != len(union):
            predictions = None
    if predictions is None:
        for i, rows in frames:
            answers[i] = _score(loaded, family, rows)
        return answers
    start = 0
    for i, rows in frames:
        part = predictions[start:start + len(rows)]
        answers[i] = _render(loaded, part.reset_index(drop=True) if isinstance(part, (pd.DataFrame, pd.Series)) else part)
        start += len(rows)
    return answers


def _parse_rows(loaded: Loaded, family: str, payload: dict) -> pd.DataFrame | Answer:
    """The request's rows as `mlflow models serve` parses them, checked by the family's rules
    (serving.rows), or the 4xx saying what is wrong."""
    from mlflow.pyfunc.scoring_server import infer_and_parse_data

    from serving.rows import RowProblem, check_rows

    unknown = sorted(set(payload) - {*schemas.INVOCATION_FORMATS, "params"})
    if unknown:
        return _problem(422, f"unknown field(s) {', '.join(repr(k[:40]) for k in unknown[:5])}: the body takes one "
                             f"of {', '.join(schemas.INVOCATION_FORMATS)} and optional params")
    if not isinstance(payload.get("params", {}), dict):
        return _problem(422, "params must be an object")
    keys = set(schemas.INVOCATION_FORMATS) & set(payload)
    if len(keys) != 1:
        return _problem(422, f"the body needs exactly one of {', '.join(schemas.INVOCATION_FORMATS)}")
    try:
        data = infer_and_parse_data({k: payload[k] for k in keys}, loaded.pyfunc.metadata.get_input_schema())
        if not isinstance(data, pd.DataFrame):
            data = pd.DataFrame(_records(data))
    except _scoring_errors() as exc:
        return _cannot_score(exc)
    if len(data) > schemas.MAX_INVOCATION_ROWS:
        return _problem(413, f"at most {schemas.MAX_INVOCATION_ROWS:,} rows per request")
    if data.empty:
        return _problem(422, "no rows to score")
    try:
        return check_rows(family, loaded.predictor, data)
    except RowProblem as problem:
        return _problem(problem.status, problem.detail)


def _records(data):
    """Records as MLflow parses `inputs` / `instances` for a model without a signature (each
    value a 0-d numpy array) with plain values, so that they make a frame of scalars."""
    if isinstance(data, list) and all(isinstance(r, dict) for r in data):
        return [{k: v.item() if isinstance(v, np.ndarray) and v.ndim == 0 else v for k, v in r.items()} for r in data]
    return data


def _score(loaded: Loaded, family: str, rows: pd.DataFrame) -> Answer:
    try:
        return _render(loaded, loaded.pyfunc.predict(rows))
    except _scoring_errors() as exc:
        return _cannot_score(exc)
    except Exception:  # checked rows the model still cannot score: a bug, this request's alone
        logger.exception("quanyu-%s could not score %d checked rows", family, len(rows))
        return _problem(500, internal_error(family))


def _render(loaded: Loaded, predictions) -> Answer:
    from mlflow.pyfunc.scoring_server import predictions_to_json

    out = io.StringIO()
    predictions_to_json(predictions, out)
    return 200, {"model_version": loaded.version, **json.loads(out.getvalue())}


def _scoring_errors() -> tuple[type[Exception], ...]:
    """What a pyfunc raises for rows it cannot score (mlflow imported here, where models are
    scored, not in the ingress that imports this module too)."""
    from mlflow.exceptions import MlflowException

    return MlflowException, ValueError, KeyError, TypeError


def _cannot_score(exc: Exception) -> Answer:
    return _problem(422, f"cannot score these rows: {str(getattr(exc, 'message', exc)).splitlines()[0][:300]}")


ROUTES = {("demand", "forecast"): forecast, ("matching", "recommend"): recommend,
          ("matching", "audience"): audience, ("location", "recommend"): sites,
          ("location", "cities"): cities, ("location", "map"): city_map}
