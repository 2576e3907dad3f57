"""Request and response models of the HTTP API. Strict: unknown fields, NaN / Infinity, ids with
control or path characters and out-of-range numbers are refused with a 422 that says which field
and why, before any model sees them."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from models.demand.features import MAX_HORIZON_DAYS

# ids as the lake's contract allows them: printable, no path separators, bounded length
Id = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$")]
CITY_PATTERN = r"^[^\x00-\x1f/\\]+$"  # a name, never a path or control characters
City = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=CITY_PATTERN)]
Finite = Annotated[float, Field(allow_inf_nan=False)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WhatIf(Strict):
    price: Annotated[Finite, Field(gt=0, le=1e6, description="per unit in the brand's currency, replaces the list price")] | None = None
    discount: Annotated[Finite, Field(ge=0, le=0.9, description="fraction off")] | None = None
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


class RecommendRequest(Strict):
    member_id: Id
    k: int = Field(10, ge=1, le=100)
    channel: Literal["online", "offline"] | None = None


class ScoredItem(BaseModel):
    sku_id: str
    score: float | None


class RecommendResponse(BaseModel):
    model_version: str
    member_id: str
    items: list[ScoredItem]
    fallback: bool
    fallback_reason: str | None = Field(None, description="segment_popularity or global_popularity (a member without "
                                        "history, an unknown id); recent_popularity or recent_popularity_unseen when "
                                        "the version serves the popularity ranking that beat its ranker")


class NewProduct(Strict):
    # the rule _price enforces, in the schema too: a list_price or a price_band
    model_config = ConfigDict(extra="forbid", json_schema_extra={"anyOf": [
        {"required": ["list_price"], "properties": {"list_price": {"type": "number"}}},
        {"required": ["price_band"], "properties": {"price_band": {"type": "string"}}}]})

    category: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    list_price: Annotated[Finite, Field(gt=0, le=1e6)] | None = None
    price_band: Literal["entry", "core", "premium"] | None = None
    style: Annotated[str, StringConstraints(max_length=64)] | None = None
    channel_availability: Literal["both", "online_only", "offline_only"] | None = None

    @model_validator(mode="after")
    def _price(self) -> "NewProduct":
        if self.list_price is None and self.price_band is None:
            raise ValueError("give the new product's list_price or price_band")
        return self


class AudienceRequest(Strict):
    # the rule _one enforces, in the schema too: exactly one of sku_id and attributes
    model_config = ConfigDict(extra="forbid", json_schema_extra={"oneOf": [
        {"required": ["sku_id"], "properties": {"sku_id": {"type": "string"}, "attributes": {"type": "null"}}},
        {"required": ["attributes"], "properties": {"attributes": {"type": "object"}, "sku_id": {"type": "null"}}}]})

    sku_id: Id | None = None
    attributes: NewProduct | None = None
    k: int = Field(100, ge=1, le=10_000)

    @model_validator(mode="after")
    def _one(self) -> "AudienceRequest":
        if (self.sku_id is None) == (self.attributes is None):
            raise ValueError("give either sku_id or attributes of a new product, not both")
        return self


class AudienceMember(BaseModel):
    member_id: str
    score: float
    segment: str


class AudienceSegment(BaseModel):
    segment: str
    mean_score: float
    members: int


class AudienceResponse(BaseModel):
    model_version: str
    sku_id: str | None
    new_product: bool
    members: list[AudienceMember]
    segments: list[AudienceSegment]
    notes: list[str] = []


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
    currency: str = Field(description="ISO 4217 code of every amount in the answer (the lake's settings.yaml)")
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
    currency: str = Field(description="ISO 4217 code of every amount in the answer (the lake's settings.yaml)")
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
    currency: str = Field(description="ISO 4217 code of every amount in the answer (the lake's settings.yaml)")
    city: str
    score: str = Field(description="what the cells' score is, with its unit")
    cells: list[MapCell]
    stores: list[MapStore]


class FamilyStatus(BaseModel):
    family: str
    alias: str
    version: str | None
    loaded_at: str | None
    metrics: dict[str, float]
    last_check: str | None
    last_error: str | None


class ModelsResponse(BaseModel):
    families: list[FamilyStatus]


class Problem(BaseModel):
    """Every 4xx / 5xx body."""

    detail: Any


# /v1/<family>/invocations takes MLflow's scoring protocol: exactly one of its input formats, each
# in the JSON shape MLflow's scoring server parses
MAX_INVOCATION_ROWS = 10_000
_ROWS = {"minItems": 1, "maxItems": MAX_INVOCATION_ROWS}
INVOCATION_SHAPES = {"dataframe_split": {"type": "object", "required": ["columns", "data"],
                                         "properties": {"columns": {"type": "array"},
                                                        "data": {"type": "array", **_ROWS}}},
                     "dataframe_records": {"type": "array", "items": {"type": "object", "minProperties": 1}, **_ROWS},
                     "instances": {"type": "array", **_ROWS},
                     "inputs": {"type": ["array", "object"], **_ROWS, "minProperties": 1}}
INVOCATION_FORMATS = tuple(INVOCATION_SHAPES)

# what one row of each family holds (serving/rows.py checks the same rules, and more: ids the model
# knows → else 404, days inside the served version's horizon → else 409)
_ID = {"type": ["string", "integer"], "minLength": 1, "maxLength": 128, "pattern": r"\S"}  # integers read as text
ROW_SCHEMAS = {
    "demand": {"type": "object", "required": ["store_id", "sku_id", "dt"],
               "properties": {"store_id": _ID, "sku_id": _ID, "dt": {"type": "string", "format": "date"},
                              "list_price": {"type": "number", "exclusiveMinimum": 0, "maximum": 1e6},
                              "offer_discount_pct": {"type": "number", "minimum": 0, "maximum": 0.9}},
               "dependentRequired": {"list_price": ["offer_discount_pct"], "offer_discount_pct": ["list_price"]}},
    "matching": {"type": "object", "required": ["member_id"],
                 "properties": {"member_id": _ID, "channel": {"enum": ["online", "offline", None]},
                                "k": {"type": ["integer", "null"], "minimum": 1, "maximum": 100}}},
    "location": {"type": "object", "required": ["site_id"],
                 "description": "a candidate site by id; rows of the model's feature columns instead of an id are "
                                "scored too (docs/serving.md)",
                 "properties": {"site_id": _ID, "store_age_days": {"type": "number", "minimum": 0, "maximum": 36_500}}},
}


def invocation_shapes(family: str) -> dict:
    """INVOCATION_SHAPES with the family's rows: records and instances of its row schema, columns
    (split) and column arrays (inputs) that include its required columns."""
    row = ROW_SCHEMAS[family]
    needed = [{"contains": {"const": c}} for c in row["required"]]
    return {"dataframe_split": {**INVOCATION_SHAPES["dataframe_split"], "properties": {
                "columns": {"type": "array", "items": {"type": "string"}, "allOf": needed},
                "data": {"type": "array", "items": {"type": "array", "minItems": len(row["required"]),
                                                    "items": {"type": ["string", "number"]}}, **_ROWS}}},
            "dataframe_records": {"type": "array", "items": row, **_ROWS},
            "instances": {"type": "array", "items": row, **_ROWS},
            "inputs": {"oneOf": [{"type": "array", "items": row, **_ROWS},
                                 {"type": "object", "required": row["required"],
                                  "additionalProperties": {"type": "array", **_ROWS}}]}}


def invocations_body(family: str) -> dict:
    """The request body of /v1/<family>/invocations."""
    return {"description": "MLflow's scoring protocol (as `mlflow models serve` takes it): exactly one of "
                           + ", ".join(INVOCATION_FORMATS) + "; optional params",
            "required": True,
            "content": {"application/json": {"schema": {
                "type": "object", "properties": {**invocation_shapes(family), "params": {"type": "object"}},
                "additionalProperties": False, "oneOf": [{"required": [f]} for f in INVOCATION_FORMATS]}}}}

