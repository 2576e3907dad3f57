"""The matching family's HTTP API (models/api.py): POST /v1/matching/recommend (products for a
member) and /v1/matching/audience (members for a product, new or known); and the rules of its
`/invocations` rows."""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from models.api import Answer, FamilyApi, Finite, Id, Invocations, Operation, Served, Strict, problem, refused
from models.rows import ID_SCHEMA, RowProblem, are, ids, require, rows_named

CHANNELS = ("online", "offline")
MAX_K = 100


class RecommendRequest(Strict):
    member_id: Id
    k: int = Field(10, ge=1, le=MAX_K)
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


def recommend(served: Served, request: dict) -> Answer:
    from models.matching.recommender import MatchingError

    req = RecommendRequest.model_validate(request)
    try:
        answer = served.predictor.recommend(req.member_id, req.k, req.channel)
    except MatchingError as exc:
        return problem(422, str(exc))
    items = [{"sku_id": i["sku_id"], "score": i["score"]} for i in answer.items]
    return 200, {"model_version": served.version, "member_id": req.member_id, "items": items,
                 "fallback": answer.fallback is not None, "fallback_reason": answer.fallback}


def audience(served: Served, request: dict) -> Answer:
    req = AudienceRequest.model_validate(request)
    attributes = req.attributes.model_dump(exclude_none=True) if req.attributes else None
    try:
        answer = served.predictor.audience(req.k, sku_id=req.sku_id, attributes=attributes)
    except ValueError as exc:  # MatchingError among them
        return refused(exc)
    return 200, {"model_version": served.version, "sku_id": req.sku_id, "new_product": answer.new_product,
                 "members": answer.members, "segments": answer.segments, "notes": answer.notes}


ROW_SCHEMA = {"type": "object", "required": ["member_id"],
              "properties": {"member_id": ID_SCHEMA, "channel": {"enum": [*CHANNELS, None]},
                             "k": {"type": ["integer", "null"], "minimum": 1, "maximum": MAX_K}}}


def check_rows(recommender, rows: pd.DataFrame) -> pd.DataFrame:
    """member_id present (a member the model has not seen gets the popularity fallback, said in
    the answer), channel online / offline or empty, k an integer 1..100 or empty."""
    require(rows, ("member_id",), " (optional: channel, k)")
    out = rows.assign(member_id=ids(rows, "member_id"))
    if "channel" in rows.columns:
        channel = rows["channel"].to_numpy(object)
        bad = np.array([not (v is None or (isinstance(v, float) and v != v) or v in CHANNELS) for v in channel])
        if bad.any():
            raise RowProblem(422, f"channel must be online, offline or empty; {rows_named(bad)} {are(bad)} not")
    if "k" in rows.columns:
        k = pd.to_numeric(rows["k"], errors="coerce").to_numpy(float)
        given = pd.notna(rows["k"]).to_numpy()
        bad = given & ~(np.isfinite(k) & (k == np.round(k)) & (k >= 1) & (k <= MAX_K))
        if bad.any():
            raise RowProblem(422, f"k must be an integer 1–{MAX_K} or empty; {rows_named(bad)} {are(bad)} not")
        out["k"] = np.where(given, k, 10).astype(np.int64)  # empty: 10, as the typed endpoint (and one type for MLflow)
    return out


API = FamilyApi(
    operations=(Operation("POST", "/recommend", "recommend", recommend, RecommendResponse, RecommendRequest),
                Operation("POST", "/audience", "audience", audience, AudienceResponse, AudienceRequest,
                          (404, 422, 503))),
    # k rows per member: one request's answer cannot be cut out of another's
    invocations=Invocations(ROW_SCHEMA, check_rows, row_per_row=False),
)
