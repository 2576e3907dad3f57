"""The import of a brand's exports (lake/importer.py): ids of any type, dates without times, what is
derived from the lines, and one problem per table × column × rule, with its count."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from lake.importer import as_ids, local_timestamps, sales_lines

MAPPING = {"order_id": "order", "timestamp": "when", "customer_id": "cust", "product_id": "item",
           "quantity": "qty", "price": "paid"}


def export(rows: int = 6) -> pd.DataFrame:
    return pd.DataFrame({"order": [1001, 1001, 1002, 1003, 1004, 1005][:rows],
                         "when": ["2025-03-01", "2025-03-01", "2025-03-02", "2025-03-02", "2025-03-03", "2025-03-03"][:rows],
                         "cust": [17, 17, 18, None, 17, 19][:rows], "item": [501, 502, 501, 503, 501, 502][:rows],
                         "qty": [2, 1, 1, 3, -1, 1][:rows], "paid": [9.5, 12.0, 9.5, 20.0, 9.5, 11.0][:rows]})


def test_ids_of_any_type_become_strings():
    assert as_ids(pd.Series([17, 18])).tolist() == ["17", "18"]
    assert as_ids(pd.Series([17.0, np.nan])).tolist()[0] == "17" and pd.isna(as_ids(pd.Series([17.0, np.nan]))[1])
    assert as_ids(pd.Series([" A-1 ", "", "007"])).tolist()[::2] == ["A-1", "007"]  # leading zeros kept


def test_dates_only_are_noon_local_and_timestamps_keep_their_instant():
    stamps, dates_only = local_timestamps(pd.Series(["2025-03-01", "2025-03-02"]), "Europe/Berlin")
    assert dates_only and stamps.iloc[0].isoformat() == "2025-03-01T12:00:00+01:00"
    stamps, dates_only = local_timestamps(pd.Series(["2025-03-01T23:30:00+00:00"]), "Asia/Shanghai")
    assert not dates_only and stamps.iloc[0].date() == dt.date(2025, 3, 2)  # 07:30 the next day in Shanghai


def test_an_online_only_export_becomes_every_table_the_lines_imply():
    got = sales_lines(export(), MAPPING, source="shop", channel="online", timezone="Asia/Shanghai")
    assert got.ok, [p.line() for p in got.problems]
    assert set(got.tables) == {"stores", "products", "members", "identities"}  # nothing written by hand
    stores, products = got.tables["stores"], got.tables["products"].set_index("sku_id")
    assert stores.to_dict("records")[0] | {"lat": 0, "lon": 0} == {
        "store_id": "shop", "channel": "online", "platform": "other", "city": None, "lat": 0, "lon": 0}
    assert products.loc["501", "list_price"] == 9.5 and products.loc["501", "launch_date"] == dt.date(2025, 3, 1)
    assert set(products["category"]) == {"all"} and any("one category, all" in n for n in got.notes)
    assert sorted(got.tables["members"]["member_id"]) == ["17", "18", "19"]
    assert set(got.tables["identities"]["channel"]) == {"other"}  # the shop's platform: its buyers link
    lines = got.lines
    assert len(lines) == 6 and lines["is_refund"].tolist() == [False, False, False, False, True, False]
    assert lines.loc[lines["order_id"] == "1001", "line_no"].tolist() == [1, 2]
    assert pd.isna(lines.loc[lines["order_id"] == "1003", "buyer_id"]).all()  # a guest stays a guest


def test_a_customers_export_brings_its_own_columns_to_the_members():
    customers = pd.DataFrame({"cust": [17, 18, 19], "age_band": ["under 18", "25-34", None],
                              "loyalty_tier": ["gold", None, "silver"], "visits": [3, 1, 8]})
    got = sales_lines(export(), MAPPING, source="shop", channel="online", timezone="Asia/Shanghai",
                      customers=customers)
    members = got.tables["members"].set_index("member_id")
    assert members.loc["17", "age_band"] == "under 18" and members.loc["19", "loyalty_tier"] == "silver"
    assert members.loc["19", "visits"] == 8 and "cust" not in members.columns


def test_lines_without_order_ids_quantities_or_some_prices():
    frame = export().drop(columns=["order", "qty"]).assign(paid=[9.5, None, None, 20.0, 9.5, 11.0])
    mapping = {k: v for k, v in MAPPING.items() if k not in ("order_id", "quantity")}
    got = sales_lines(frame, mapping, source="shop", channel="online", timezone="Asia/Shanghai")
    assert got.ok and got.lines["order_id"].str.startswith("shop-L").all() and (got.lines["quantity"] == 1).all()
    assert got.lines["unit_price"].tolist()[:3] == [9.5, 11.0, 9.5]  # the product's median price on other lines


@pytest.mark.parametrize("change, column, rule, rows", [
    (lambda f: f.assign(qty=["2", "x", "1", "3", "y", "1"]), "qty", "not_a_number", 2),
    (lambda f: f.assign(qty=[2, 1.5, 1, 3, -1, 1]), "qty", "not_whole", 1),
    (lambda f: f.assign(when=["2025-03-01", "soon", "2025-03-02", "later", "2025-03-03", "2025-03-03"]), "when",
     "not_a_time", 2),
    (lambda f: f.assign(item=[501, None, 501, None, None, 502]), "item", "missing", 3),
    (lambda f: f.assign(paid=[9.5, 12.0, 9.5, None, 9.5, 11.0]), "paid", "missing", 1),  # 503 sells nowhere else
    (lambda f: f.assign(paid=[-9.5, 12.0, 9.5, 20.0, 9.5, 11.0]), "paid", "negative", 1),
    (lambda f: f.drop(columns=["item"]), "item", "missing_column", 6),
])
def test_each_mistake_is_one_problem_with_its_count(change, column, rule, rows):
    got = sales_lines(change(export()), MAPPING, source="shop", channel="online", timezone="Asia/Shanghai")
    assert [(p.column, p.rule, p.rows) for p in got.problems] == [(column, rule, rows)]
    assert got.lines is None and not got.tables  # nothing half-made


def test_a_mapping_that_names_no_field_or_no_column_says_which():
    got = sales_lines(export(), {**MAPPING, "colour": "c", "shop": "store"}, source="shop", channel="online",
                      timezone="Asia/Shanghai")
    said = {(p.column, p.rule) for p in got.problems}
    assert said == {("colour", "unknown_field"), ("store", "missing_column")}
    assert "its columns: order, when" in next(p.message for p in got.problems if p.rule == "missing_column")


def test_thousands_of_bad_rows_are_one_message():
    frame = pd.concat([export()] * 1000, ignore_index=True).assign(qty="many")
    got = sales_lines(frame, MAPPING, source="shop", channel="online", timezone="Asia/Shanghai")
    assert [(p.rule, p.rows) for p in got.problems] == [("not_a_number", 6000)]
