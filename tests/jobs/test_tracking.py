"""Lineage: the digest a training run logs for each table it read covers every row, cheaply."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from jobs.tracking import frame_digest, frame_schema


def frame(n: int = 50_000) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"dt": [dt.date(2026, 1, 1) + dt.timedelta(days=int(d)) for d in rng.integers(0, 30, n)],
                         "store_id": rng.choice(["ST-1", "ST-2", "ON-TMALL"], n),
                         "units_sold": rng.integers(0, 9, n).astype(np.int32), "list_price": rng.random(n)})


def test_the_digest_sees_a_change_in_any_row_and_not_how_ids_are_held():
    base = frame()
    digest = frame_digest(base)
    assert frame_digest(frame()) == digest  # deterministic
    last = base.copy()
    last.loc[len(last) - 1, "units_sold"] += 1  # MLflow's own pandas digest reads the first 10,000 rows only
    assert frame_digest(last) != digest
    assert frame_digest(base.head(-1)) != digest
    assert frame_digest(base.rename(columns={"list_price": "price"})) != digest
    assert frame_digest(base.astype({"store_id": "category"})) == digest  # ids read as categoricals


def test_the_schema_comes_from_the_column_types_and_nulls():
    rows = frame(100).assign(list_price=lambda f: f["list_price"].where(f.index > 0))
    schema = {c.name: (c.type.name, c.required) for c in frame_schema(rows.astype({"store_id": "category"})).inputs}
    assert schema == {"dt": ("string", True), "store_id": ("string", True), "units_sold": ("integer", True),
                      "list_price": ("double", False)}
