"""MLflow's scoring protocol, `/v1/<family>/invocations`, for every family: rows parsed as `mlflow
models serve` parses them, checked by the family's row rules (its models/<family>/api.py), scored
by the version's pyfunc, alone or together with other requests' rows. The families' own
operations are answered by their packages' handlers (models/api.py). Each returns (HTTP status,
JSON body); rows the model cannot score are a 4xx with a message, never a 500."""

from __future__ import annotations

import io
import json
import logging

import numpy as np
import pandas as pd

from models.api import Answer, problem
from models.families import family as registered
from models.rows import RowProblem
from serving import schemas
from serving.families import Loaded

logger = logging.getLogger("quanyu.serving")


def internal_error(family: str) -> str:
    """What a caller is told of a bug: nothing internal, and where the operator finds the traceback."""
    return (f"internal error in quanyu-{family}; its traceback is in the replica's log (Ray's "
            "session_latest/logs/serve/ folder, under QUANYU_HOME/ray for a local server)")


def invocations(loaded: Loaded, family: str, payload: dict) -> Answer:
    """MLflow's scoring protocol on feature rows: the same parsing `mlflow models serve` does, the
    same answer `mlflow.pyfunc.load_model(...).predict` gives, as {"predictions": …}; rows are
    checked first as strictly as the family's typed endpoints (its api's row rules)."""
    rows = _parse_rows(loaded, family, payload)
    return rows if isinstance(rows, tuple) else _score(loaded, family, rows)


def invocations_many(loaded: Loaded, family: str, payloads: list[dict]) -> list[Answer]:
    """invocations() of several requests, each answered as it would be alone. When the model
    answers row per row, the checked rows of every valid request are scored in one predict call
    and each request's answer is cut from it; when that call fails or answers another number of
    rows (or the requests differ in columns or types), each request is scored alone, so one
    request can only spoil its own answer."""
    if not registered(family).api().invocations.row_per_row or len(payloads) == 1:
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
    (its api's `invocations.check`), or the 4xx saying what is wrong."""
    from mlflow.pyfunc.scoring_server import infer_and_parse_data

    unknown = sorted(set(payload) - {*schemas.INVOCATION_FORMATS, "params"})
    if unknown:
        return problem(422, f"unknown field(s) {', '.join(repr(k[:40]) for k in unknown[:5])}: the body takes one "
                             f"of {', '.join(schemas.INVOCATION_FORMATS)} and optional params")
    if not isinstance(payload.get("params", {}), dict):
        return problem(422, "params must be an object")
    keys = set(schemas.INVOCATION_FORMATS) & set(payload)
    if len(keys) != 1:
        return problem(422, f"the body needs exactly one of {', '.join(schemas.INVOCATION_FORMATS)}")
    try:
        data = infer_and_parse_data({k: payload[k] for k in keys}, loaded.pyfunc.metadata.get_input_schema())
        if not isinstance(data, pd.DataFrame):
            data = pd.DataFrame(_records(data))
    except _scoring_errors() as exc:
        return _cannot_score(exc)
    if len(data) > schemas.MAX_INVOCATION_ROWS:
        return problem(413, f"at most {schemas.MAX_INVOCATION_ROWS:,} rows per request")
    if data.empty:
        return problem(422, "no rows to score")
    try:
        return registered(family).api().invocations.check(loaded.predictor, data)
    except RowProblem as wrong:
        return problem(wrong.status, wrong.detail)


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
        return problem(500, internal_error(family))


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
    return problem(422, f"cannot score these rows: {str(getattr(exc, 'message', exc)).splitlines()[0][:300]}")

