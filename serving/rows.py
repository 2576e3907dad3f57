"""The rows of `/v1/<family>/invocations`, checked as strictly as the typed endpoints check their
requests, before a model sees them: ids present and known, dates inside the model's horizon,
numbers finite and in range. A problem is a `RowProblem` (its HTTP status and a message naming
the rows), so a bad row answers its own request with a 4xx and never reaches a batch it would
share with other requests.

The checks read only what every version of a family holds (the forecaster's learned tables, the
recommender's state and sites), so they guard versions registered before they were written too.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

MAX_ID_LENGTH = 128
MAX_PRICE = 1e6  # the typed what-if's bound (schemas.WhatIf)
MAX_DISCOUNT = 0.9
CHANNELS = ("online", "offline")
MAX_K = 100  # schemas.RecommendRequest


class RowProblem(Exception):
    """Rows the family cannot score: `status` (404 unknown ids, 409 days outside the served
    version's horizon, 422 otherwise) and what is wrong."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


def check_rows(family: str, predictor, rows: pd.DataFrame) -> pd.DataFrame:
    """The rows, ids as strings, when every rule of the family holds. Raises RowProblem."""
    return CHECKS[family](predictor, rows)


def _rows_named(mask: np.ndarray) -> str:
    where = np.flatnonzero(mask)
    shown = ", ".join(str(i) for i in where[:5]) + (f" and {len(where) - 5} more" if len(where) > 5 else "")
    return f"row{'s' if len(where) > 1 else ''} {shown}"


def _require(rows: pd.DataFrame, columns: tuple[str, ...], hint: str) -> None:
    missing = [c for c in columns if c not in rows.columns]
    if missing:
        raise RowProblem(422, f"input rows need column{'s' if len(missing) > 1 else ''} {', '.join(missing)}{hint}")


def _ids(rows: pd.DataFrame, column: str) -> pd.Series:
    """A column of ids as strings: integers are written as strings, anything else that is not a
    non-empty string of at most MAX_ID_LENGTH characters (null, NaN, a float, a list) is refused."""
    values = rows[column].to_numpy(object)
    as_text = np.array([str(v) if isinstance(v, (int, np.integer)) and not isinstance(v, bool) else v
                        for v in values], dtype=object)
    bad = np.array([not isinstance(v, str) or not v.strip() or len(v) > MAX_ID_LENGTH for v in as_text], dtype=bool)
    if bad.any():
        raise RowProblem(422, f"{column} must be a non-empty id of at most {MAX_ID_LENGTH} characters; "
                              f"{_rows_named(bad)} {'have' if bad.sum() > 1 else 'has'} none")
    return pd.Series(as_text, index=rows.index, dtype=object)


def _numbers(rows: pd.DataFrame, column: str, low: float, high: float, low_open: bool = False) -> np.ndarray:
    """A numeric column, every value finite and inside [low, high] (or (low, high])."""
    values = pd.to_numeric(rows[column], errors="coerce").to_numpy(float)
    inside = (values > low if low_open else values >= low) & (values <= high)
    bad = ~(np.isfinite(values) & inside)
    if bad.any():
        bound = f" in {'(' if low_open else '['}{low:g}, {high:g}]" if np.isfinite([low, high]).all() else ""
        raise RowProblem(422, f"{column} must be a finite number{bound}; {_rows_named(bad)} {'are' if bad.sum() > 1 else 'is'} not")
    return values


def _unknown(asked: pd.Series, known, column: str) -> None:
    missing = sorted(set(asked) - set(known))
    if missing:
        raise RowProblem(404, f"unknown {column}(s): {', '.join(map(repr, missing[:5]))}"
                              + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))


def demand(forecaster, rows: pd.DataFrame) -> pd.DataFrame:
    """store_id and sku_id known to the model, dt 1..horizon days after its origin; list_price and
    offer_discount_pct both or neither, finite and in the what-if's ranges."""
    _require(rows, ("store_id", "sku_id", "dt"), " (optional: list_price and offer_discount_pct)")
    stores, skus = _ids(rows, "store_id"), _ids(rows, "sku_id")
    tables = forecaster.tables_
    _unknown(stores, tables["stores"]["store_id"], "store_id")
    _unknown(skus, tables["products"]["sku_id"], "sku_id")
    days = pd.to_datetime(rows["dt"], errors="coerce", format="mixed")
    horizon = forecaster.config.features.horizon
    ahead = (days.dt.normalize() - pd.Timestamp(forecaster.origin_)).dt.days.to_numpy(float)
    bad = ~np.isfinite(ahead) | (ahead < 1) | (ahead > horizon)
    if bad.any():
        raise RowProblem(409 if np.isfinite(ahead[bad]).all() else 422,
                         f"dt must be a date 1–{horizon} days after the model's origin {forecaster.origin_} "
                              f"(YYYY-MM-DD); {_rows_named(bad)} {'are' if bad.sum() > 1 else 'is'} not")
    priced = [c for c in ("list_price", "offer_discount_pct") if c in rows.columns]
    if len(priced) == 1:
        raise RowProblem(422, "give both list_price and offer_discount_pct, or neither (the planned ones)")
    out = rows.assign(store_id=stores, sku_id=skus)
    if priced:
        out["list_price"] = _numbers(rows, "list_price", 0, MAX_PRICE, low_open=True)
        out["offer_discount_pct"] = _numbers(rows, "offer_discount_pct", 0, MAX_DISCOUNT)
    return out


def matching(recommender, rows: pd.DataFrame) -> pd.DataFrame:
    """member_id present (a member the model has not seen gets the popularity fallback, said in
    the answer), channel online / offline or empty, k an integer 1..100 or empty."""
    _require(rows, ("member_id",), " (optional: channel, k)")
    out = rows.assign(member_id=_ids(rows, "member_id"))
    if "channel" in rows.columns:
        channel = rows["channel"].to_numpy(object)
        bad = np.array([not (v is None or (isinstance(v, float) and v != v) or v in CHANNELS) for v in channel])
        if bad.any():
            raise RowProblem(422, f"channel must be online, offline or empty; {_rows_named(bad)} {'are' if bad.sum() > 1 else 'is'} not")
    if "k" in rows.columns:
        k = pd.to_numeric(rows["k"], errors="coerce").to_numpy(float)
        given = pd.notna(rows["k"]).to_numpy()
        bad = given & ~(np.isfinite(k) & (k == np.round(k)) & (k >= 1) & (k <= MAX_K))
        if bad.any():
            raise RowProblem(422, f"k must be an integer 1–{MAX_K} or empty; {_rows_named(bad)} {'are' if bad.sum() > 1 else 'is'} not")
        out["k"] = np.where(given, k, 10).astype(np.int64)  # empty: 10, as the typed endpoint (and one type for MLflow)
    return out


def location(recommender, rows: pd.DataFrame) -> pd.DataFrame:
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
        sites = _ids(rows, "site_id")
        _unknown(sites, recommender.sites["site_id"].astype(str), "site_id")
        out = rows.assign(site_id=sites)
    else:
        for name in features:
            _numbers(rows, name, -np.inf, np.inf)
    if "format" in rows.columns:
        bad = ~rows["format"].isin(FORMATS).to_numpy()
        if bad.any():
            raise RowProblem(422, f"format must be one of {', '.join(FORMATS)}; {_rows_named(bad)} {'are' if bad.sum() > 1 else 'is'} not")
    if "store_age_days" in rows.columns:
        _numbers(rows, "store_age_days", 0, 36_500)
    return out


CHECKS = {"demand": demand, "matching": matching, "location": location}
