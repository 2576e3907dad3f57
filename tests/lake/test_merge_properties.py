"""Property tests of the merge's invariants on random small days (hypothesis)."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import given, settings, strategies as st

from lake.contract import (
    IDENTITIES, ONLINE_ORDERS, POS_TRANSACTIONS, PRODUCTS, PROMOTIONS, STORES, complete,
)
from lake.merge import Dimensions, merge_day
from lake.oneid import identity_index

DAY = dt.date(2025, 3, 1)
TS = dt.datetime(2025, 3, 1, 12, 0)
PLATFORMS = ["tmall", "jd"]
SKUS = ["A", "B", "C"]
BUYERS = [f"u{i}" for i in range(6)]
MEMBERS = ["M1", "M2", "M3"]

STORES_T = complete(pa.Table.from_pylist([
    {"store_id": "ON-TMALL", "channel": "online", "platform": "tmall", "city": None, "lat": None, "lon": None},
    {"store_id": "ON-JD", "channel": "online", "platform": "jd", "city": None, "lat": None, "lon": None},
    {"store_id": "S1", "channel": "offline", "platform": None, "city": "X", "lat": 31.2, "lon": 121.4},
    {"store_id": "S2", "channel": "offline", "platform": None, "city": "X", "lat": 31.3, "lon": 121.5},
]), STORES)
PRODUCTS_T = complete(pa.Table.from_pylist([
    {"sku_id": s, "category": "tops", "list_price": 100.0, "launch_date": dt.date(2024, 1, 1)} for s in SKUS]), PRODUCTS)
PROMOS_T = complete(pa.Table.from_pylist([
    {"promo_id": "P", "start_date": DAY, "end_date": DAY, "channel": "online", "discount_pct": 0.2}]), PROMOTIONS)

line = st.fixed_dictionaries({
    "online": st.booleans(), "store": st.integers(0, 1), "sku": st.sampled_from(SKUS),
    "quantity": st.integers(1, 3), "refund": st.booleans(), "buyer": st.one_of(st.none(), st.sampled_from(BUYERS)),
})
link = st.tuples(st.sampled_from(PLATFORMS + ["pos"]), st.sampled_from(BUYERS), st.sampled_from(MEMBERS))


def _tables(lines, links):
    online, pos = [], []
    for i, l in enumerate(lines):
        q = -l["quantity"] if l["refund"] else l["quantity"]
        if l["online"]:
            online.append({"order_id": f"o{i}", "line_no": 1, "is_refund": l["refund"], "order_ts": TS,
                           "store_id": ["ON-TMALL", "ON-JD"][l["store"]], "sku_id": l["sku"], "quantity": q,
                           "unit_price": 80.0, "buyer_id": l["buyer"]})
        else:
            pos.append({"txn_id": f"t{i}", "line_no": 1, "is_refund": l["refund"], "txn_ts": TS,
                        "store_id": ["S1", "S2"][l["store"]], "sku_id": l["sku"], "quantity": q,
                        "unit_price": 99.0, "member_card_id": l["buyer"]})
    ids = complete(pa.Table.from_pylist([{"channel": c, "channel_user_id": u, "member_id": m} for c, u, m in links],
                                        schema=IDENTITIES.schema(["channel", "channel_user_id", "member_id"])), IDENTITIES)
    to = lambda rows, spec: complete(pa.Table.from_pylist(rows), spec) if rows else None
    return to(online, ONLINE_ORDERS), to(pos, POS_TRANSACTIONS), ids


def _dims(ids):
    return Dimensions(stores=STORES_T, products=PRODUCTS_T, promotions=PROMOS_T, prices=None, assortment=None,
                      identities=identity_index(ids))


@settings(max_examples=60, deadline=None)
@given(st.lists(line, min_size=1, max_size=30), st.lists(link, max_size=12))
def test_merge_invariants(lines, links):
    online, pos, ids = _tables(lines, links)
    dims = _dims(ids)
    day = merge_day(DAY, online, pos, dims)
    raw_units = sum(pc.sum(t["quantity"]).as_py() for t in (online, pos) if t is not None)
    # units are conserved through every curated table that carries them
    assert pc.sum(day.sales_lines["quantity"]).as_py() == raw_units
    assert pc.sum(day.demand_daily["units_net"]).as_py() == raw_units
    assert pc.sum(day.store_daily["units_net"]).as_py() == raw_units
    assert day.sales_lines.num_rows == len(lines)
    # no identity maps to two members, and an ambiguous id maps to none
    owners: dict[tuple, set] = {}
    for c, u, m in links:
        owners.setdefault((c, u), set()).add(m)
    for row in day.sales_lines.to_pylist():
        channel = row["platform"] if row["channel"] == "online" else "pos"
        linked = owners.get((channel, _buyer(row, lines)), set())
        if len(linked) == 1:
            assert row["member_id"] in linked and row["resolution"] == "channel_id"
        else:
            assert row["member_id"] is None and row["resolution"] in ("guest", "anonymous")
    # idempotent: the same input gives the same tables
    again = merge_day(DAY, online, pos, dims)
    for name in ("sales_lines", "demand_daily", "interactions", "store_daily"):
        assert getattr(again, name).equals(getattr(day, name))


def _buyer(row, lines):
    return lines[int(row["order_id"][1:])]["buyer"]
