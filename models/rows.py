"""Checks of `/invocations` rows, shared by the families' row rules (`models/<family>/api.py`):
each family's rows are checked as strictly as its typed endpoints check their requests, before
a model sees them. A problem is a `RowProblem` (its HTTP status and a message naming the rows),
so a bad row answers its own request with a 4xx and never reaches a batch it would share with
other requests.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

MAX_ID_LENGTH = 128
ID_SCHEMA = {"type": ["string", "integer"], "minLength": 1, "maxLength": MAX_ID_LENGTH, "pattern": r"\S"}  # integers read as text


class RowProblem(Exception):
    """Rows the family cannot score: `status` (404 unknown ids, 409 days outside the served
    version's horizon, 422 otherwise) and what is wrong."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


def rows_named(mask: np.ndarray) -> str:
    where = np.flatnonzero(mask)
    shown = ", ".join(str(i) for i in where[:5]) + (f" and {len(where) - 5} more" if len(where) > 5 else "")
    return f"row{'s' if len(where) > 1 else ''} {shown}"


def are(mask: np.ndarray) -> str:
    return "are" if mask.sum() > 1 else "is"


def require(rows: pd.DataFrame, columns: tuple[str, ...], hint: str) -> None:
    missing = [c for c in columns if c not in rows.columns]
    if missing:
        raise RowProblem(422, f"input rows need column{'s' if len(missing) > 1 else ''} {', '.join(missing)}{hint}")


def ids(rows: pd.DataFrame, column: str) -> pd.Series:
    """A column of ids as strings: integers are written as strings, anything else that is not a
    non-empty string of at most MAX_ID_LENGTH characters (null, NaN, a float, a list) is refused."""
    values = rows[column].to_numpy(object)
    as_text = np.array([str(v) if isinstance(v, (int, np.integer)) and not isinstance(v, bool) else v
                        for v in values], dtype=object)
    bad = np.array([not isinstance(v, str) or not v.strip() or len(v) > MAX_ID_LENGTH for v in as_text], dtype=bool)
    if bad.any():
        raise RowProblem(422, f"{column} must be a non-empty id of at most {MAX_ID_LENGTH} characters; "
                              f"{rows_named(bad)} {'have' if bad.sum() > 1 else 'has'} none")
    return pd.Series(as_text, index=rows.index, dtype=object)


def numbers(rows: pd.DataFrame, column: str, low: float, high: float, low_open: bool = False) -> np.ndarray:
    """A numeric column, every value finite and inside [low, high] (or (low, high])."""
    values = pd.to_numeric(rows[column], errors="coerce").to_numpy(float)
    inside = (values > low if low_open else values >= low) & (values <= high)
    bad = ~(np.isfinite(values) & inside)
    if bad.any():
        bound = f" in {'(' if low_open else '['}{low:g}, {high:g}]" if np.isfinite([low, high]).all() else ""
        raise RowProblem(422, f"{column} must be a finite number{bound}; {rows_named(bad)} {are(bad)} not")
    return values


def known(asked: pd.Series, names, column: str) -> None:
    """Every asked id among the version's `names`; else 404 naming the first unknown ones."""
    missing = sorted(set(asked) - set(names))
    if missing:
        raise RowProblem(404, f"unknown {column}(s): {', '.join(map(repr, missing[:5]))}"
                              + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
