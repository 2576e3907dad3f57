"""The location family's HTTP API (models/api.py): POST /v1/location/recommend (the next stores of
a city), GET /v1/location/cities and /v1/location/map (the planner's city list and map layers);
and the rules of its `/invocations` rows."""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from lake.settings import DEFAULT_CURRENCY
from models.api import Answer, City, FamilyApi, Finite, Id, Invocations, Operation, Served, Strict, problem, refused
from models.rows import ID_SCHEMA, RowProblem, are, ids, known, numbers, rows_named

CURRENCY = Field(description="ISO 4217 code of every amount in the answer (the lake's settings.yaml)")


class SitesRequest(Strict):
    city: City
    k: int = Field(5, ge=1, le=50)
    min_distance_km: Annotated[Finite, Field(ge=0, le=100)] | None = None
    max_rent: Annotated[Finite, Field(ge=0, le=1e6)] | None = None
    exclude: list[Id] = Field(default_factory=list, max_length=5000)
    include: list[Id] = Field(default_factory=list, max_length=50)
    objective: Literal["net_gain", "coverage"] = "net_gain"


class CityMapRequest(Strict):
    city: City


class SitePick(BaseModel):
    rank: int
    site_id: str
    lat: float
    lon: float
    predicted_revenue: float
    cannibalisation: float
    net_gain: float
    rent_per_sqm_month: float
    population: float
    covered_population: float | None = None
    forced: bool
    reasons: list[str]


class SitesResponse(BaseModel):
    model_version: str
    data_date: str | None
    currency: str = CURRENCY
    city: str
    k: int
    objective: str
    picks: list[SitePick]
    total_net_gain: float
    covered_population: float | None
    candidates: int
    feasible: int


class CitySummary(BaseModel):
    city: str
    candidates: int
    stores: int


class CitiesResponse(BaseModel):
    model_version: str
    data_date: str | None
    currency: str = CURRENCY
    cities: list[CitySummary]


class MapCell(BaseModel):
    site_id: str
    lat: float
    lon: float
    boundary: list[tuple[float, float]] | None = Field(description="the H3 cell's corners as (lat, lon)")
    predicted_revenue: float = Field(description="per year, in the answer's currency, for a store of the recommended format")
    rent_per_sqm_month: float
    population: float
    competitors: float


class MapStore(BaseModel):
    store_id: str
    lat: float
    lon: float
    format: str | None
    revenue_annualised: float | None


class CityMapResponse(BaseModel):
    model_version: str
    data_date: str | None
    currency: str = CURRENCY
    city: str
    score: str = Field(description="what the cells' score is, with its unit")
    cells: list[MapCell]
    stores: list[MapStore]


def sites(served: Served, request: dict) -> Answer:
    from models.location.recommender import RecommendError

    req = SitesRequest.model_validate(request)
    try:
        result = served.predictor.recommend(req.city, req.k, min_distance_km=req.min_distance_km,
                                            max_rent=req.max_rent, exclude=req.exclude, include=req.include,
                                            objective=req.objective)
    except RecommendError as exc:  # an unknown city or site, constraints no sites meet, a request to change
        return refused(exc)
    body = result.as_dict()
    body.pop("seconds", None)
    return 200, {"model_version": served.version, "data_date": served.predictor.meta.get("data_date"),
                 "currency": _currency(served.predictor), **body}


def _currency(recommender) -> str:
    """The currency of a location version's amounts: its lake's (settings.yaml), kept with it."""
    return recommender.meta.get("currency", DEFAULT_CURRENCY)


def cities(served: Served, request: dict) -> Answer:
    """The cities the served location model can plan in, for the planner's city field."""
    recommender = served.predictor
    stores = recommender.stores.groupby("city").size()
    listed = [{"city": c, "candidates": int(len(recommender.plan(c).sites)), "stores": int(stores.get(c, 0))}
              for c in recommender.cities]
    return 200, {"model_version": served.version, "data_date": recommender.meta.get("data_date"),
                 "currency": _currency(recommender), "cities": listed}


def city_map(served: Served, request: dict) -> Answer:
    """Every candidate cell of one city with its score, rent and competitors, and the brand's own
    stores: the planner's map layers. Recommendations themselves come from `sites`."""
    city = CityMapRequest.model_validate(request).city
    recommender = served.predictor
    if city not in recommender.cities:  # the recommender's own wording, as /v1/location/recommend gives it
        return problem(404, f"unknown city {city!r}; cities with candidate sites: {', '.join(recommender.cities)}")
    plan = recommender.plan(city)
    candidates = plan.sites
    cells = [{"site_id": sid, "lat": round(la, 6), "lon": round(lo, 6), "boundary": _boundary(sid),
              "predicted_revenue": round(rev, 2), "rent_per_sqm_month": rent, "population": pop,
              "competitors": comp}
             for sid, la, lo, rev, rent, pop, comp in zip(
                 candidates["site_id"].astype(str), candidates["lat"].astype(float),
                 candidates["lon"].astype(float), candidates["predicted_revenue"].astype(float),
                 candidates["rent_per_sqm_month"].astype(float), candidates["population"].fillna(0).astype(float),
                 candidates["competitors"].fillna(0).astype(float))]
    own = [{"store_id": str(r.store_id), "lat": float(r.lat), "lon": float(r.lon),
            "format": getattr(r, "format", None),
            "revenue_annualised": _finite(getattr(r, "revenue_annualised", None))}
           for r in plan.stores.itertuples(index=False)]
    currency = _currency(recommender)
    return 200, {"model_version": served.version, "data_date": recommender.meta.get("data_date"),
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


ROW_SCHEMA = {"type": "object", "required": ["site_id"],
              "description": "a candidate site by id; rows of the model's feature columns instead of an id are "
                             "scored too (docs/serving.md)",
              "properties": {"site_id": ID_SCHEMA, "store_age_days": {"type": "number", "minimum": 0, "maximum": 36_500}}}


def check_rows(recommender, rows: pd.DataFrame) -> pd.DataFrame:
    """site_id known to the model's site snapshot, or every feature column finite; format and
    store_age_days, when given, a known format and a finite age of at least 0 days."""
    from models.location.features import FORMATS

    model = recommender.model
    features = [n for n in model.names if n not in ("format", "store_age_days")]
    out = rows
    if not set(features) <= set(rows.columns):
        if "site_id" not in rows.columns:
            missing = sorted(set(features) - set(rows.columns))
            raise RowProblem(422, f"input rows need site_id or every feature column (missing {', '.join(missing[:6])}"
                                  + ("…" if len(missing) > 6 else "") + ")")
        site_ids = ids(rows, "site_id")
        known(site_ids, recommender.sites["site_id"].astype(str), "site_id")
        out = rows.assign(site_id=site_ids)
    else:
        for name in features:
            numbers(rows, name, -np.inf, np.inf)
    if "format" in rows.columns:
        bad = ~rows["format"].isin(FORMATS).to_numpy()
        if bad.any():
            raise RowProblem(422, f"format must be one of {', '.join(FORMATS)}; {rows_named(bad)} {are(bad)} not")
    if "store_age_days" in rows.columns:
        numbers(rows, "store_age_days", 0, 36_500)
    return out


API = FamilyApi(
    operations=(Operation("POST", "/recommend", "recommend", sites, SitesResponse, SitesRequest, (404, 409, 422, 503)),
                Operation("GET", "/cities", "cities", cities, CitiesResponse, statuses=(503,)),
                Operation("GET", "/map", "map", city_map, CityMapResponse, CityMapRequest, (404, 422, 503))),
    # one predicted revenue per row, in order
    invocations=Invocations(ROW_SCHEMA, check_rows, row_per_row=True),
)
