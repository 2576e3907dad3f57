"""The models of what every app answers alike: the root's /v1/models, every 4xx / 5xx body, and
the body of each family's MLflow-protocol /invocations (its rows' schema comes from the family's
package). The families' own request and response models are in `models/<family>/api.py`: strict,
so unknown fields, NaN / Infinity, ids with control or path characters and out-of-range numbers
are refused with a 422 that says which field and why, before any model sees them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from models.families import family as registered


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


def invocation_shapes(family: str) -> dict:
    """INVOCATION_SHAPES with the family's rows: records and instances of its row schema, columns
    (split) and column arrays (inputs) that include its required columns."""
    row = registered(family).api().invocations.row_schema
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

