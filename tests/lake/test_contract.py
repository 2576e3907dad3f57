"""The contract and its documentation stay in step; conform and complete behave."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pytest

from lake.contract import CURATED_TABLES, ONLINE_ORDERS, RAW_TABLES, STORES, complete, conform, markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "lake.md"


@pytest.mark.parametrize("name", [*RAW_TABLES, *CURATED_TABLES])
def test_docs_show_every_table_exactly_as_the_contract_defines_it(name):
    table = RAW_TABLES.get(name) or CURATED_TABLES[name]
    text = DOC.read_text()
    assert f"### {name}\n" in text
    assert markdown(table) in text, f"docs/lake.md is out of date for {name}: paste lake.contract.markdown()"


def test_conform_casts_naive_local_times_and_rejects_missing_required_columns():
    rows = pa.table({"order_id": ["o1"], "line_no": pa.array([1], pa.int64()), "is_refund": [False],
                     "order_ts": pa.array([dt.datetime(2025, 3, 1, 23, 30)], pa.timestamp("ms")),
                     "store_id": ["ON-JD"], "sku_id": ["A"], "quantity": pa.array([2], pa.int64()),
                     "unit_price": [10.0], "buyer_id": pa.array([None], pa.string())})
    typed = conform(rows, ONLINE_ORDERS)
    assert typed.schema.field("line_no").type == pa.int32()
    assert typed.column("order_ts")[0].as_py().isoformat() == "2025-03-01T23:30:00+08:00"
    full = complete(rows, ONLINE_ORDERS)
    assert full.column_names == [c.name for c in ONLINE_ORDERS.columns]
    assert full.column("phone_hash").null_count == 1
    with pytest.raises(KeyError, match="required columns missing: sku_id"):
        conform(rows.drop_columns(["sku_id"]), ONLINE_ORDERS)


def test_required_columns_that_may_be_empty():
    city = STORES.column("city")
    assert city.required and city.allows_null
    assert not STORES.column("store_id").allows_null
    assert not STORES.column("format").required and STORES.column("format").allows_null
