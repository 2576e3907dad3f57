"""The stock family's HTTP API (models/api.py): GET /v1/stock/level?sku_id=…"""

from __future__ import annotations

from pydantic import BaseModel

from models.api import Answer, FamilyApi, Id, Invocations, Operation, Served, Strict, problem
from models.rows import ID_SCHEMA, ids, known, require


class LevelQuery(Strict):
    sku_id: Id


class LevelResponse(BaseModel):
    model_version: str
    origin: str
    sku_id: str
    units: float


def level(served: Served, request: dict) -> Answer:
    sku = LevelQuery.model_validate(request).sku_id
    units = served.predictor.units.get(sku)
    if units is None:
        return problem(404, f"unknown SKU {sku!r}")
    return 200, {"model_version": served.version, "origin": served.predictor.origin, "sku_id": sku, "units": units}


def check_rows(levels, rows):
    require(rows, ("sku_id",), "")
    skus = ids(rows, "sku_id")
    known(skus, levels.units, "sku_id")
    return rows.assign(sku_id=skus)


API = FamilyApi(
    operations=(Operation("GET", "/level", "level", level, LevelResponse, LevelQuery, (404, 422, 503)),),
    invocations=Invocations({"type": "object", "required": ["sku_id"], "properties": {"sku_id": ID_SCHEMA}},
                            check_rows, row_per_row=True),
)
