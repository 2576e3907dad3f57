"""The omnichannel merge, one day at a time: raw online and POS lines → curated tables.

Pure functions over Arrow tables. `merge_day` turns one day's raw lines (plus the dimension
tables) into that day's sales_lines, demand_daily, interactions and store_daily;
`store_performance` summarises store_daily over the whole history.

Refunds are netted on the day they happen (event-date accounting): a refund is a line with
negative quantity in the partition of its own date. So the curated tables of day D depend only
on day D's raw lines, and a merge of one new day touches only that day.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from lake.contract import (
    DEFAULT_PLATFORM, DEMAND_DAILY, INTERACTIONS, ONLINE_ORDERS, POS_TRANSACTIONS, SALES_LINES, STORE_DAILY,
    STORE_PERFORMANCE, complete, conform,
)
from lake.oneid import IdentityIndex, resolve_online, resolve_pos

RANGING_WINDOW_DAYS = 56  # without an assortment table: ranged if sold there within this window


@dataclass(frozen=True)
class Dimensions:
    """The dimension tables the merge needs, already typed (see `lake.contract.complete`)."""

    stores: pa.Table
    products: pa.Table
    promotions: pa.Table
    prices: pa.Table | None  # list-price history; None → products.list_price
    assortment: pa.Table | None  # None → ranging inferred from recent sales
    identities: IdentityIndex
    timezone: str | None = None  # the brand's (settings.yaml): naive timestamps are local time there


@dataclass(frozen=True)
class CuratedDay:
    day: dt.date
    sales_lines: pa.Table
    demand_daily: pa.Table
    interactions: pa.Table
    store_daily: pa.Table


def unify_lines(online: pa.Table | None, pos: pa.Table | None, dims: Dimensions, day: dt.date) -> pa.Table:
    """One shape for online and offline lines, with the buyer resolved to a OneID."""
    parts = []
    # an online shop's buyers link through identities of its platform's channel; a shop without
    # a platform is an `other` shop
    platforms = dims.stores.select(["store_id"]).append_column(
        "platform", pc.fill_null(dims.stores["platform"], DEFAULT_PLATFORM))
    if online is not None and online.num_rows:
        lines = complete(online, ONLINE_ORDERS, dims.timezone).join(platforms, keys="store_id", join_type="left outer")
        lines = resolve_online(lines, dims.identities)
        parts.append(pa.table({
            "ts": lines["order_ts"], "channel": pa.array(["online"] * lines.num_rows),
            "store_id": lines["store_id"], "platform": lines["platform"], "order_id": lines["order_id"],
            "line_no": lines["line_no"], "is_refund": lines["is_refund"], "sku_id": lines["sku_id"],
            "quantity": lines["quantity"], "unit_price": lines["unit_price"], "list_price": lines["list_price"],
            "promo_id": lines["promo_id"], "member_id": lines["member_id"], "resolution": lines["resolution"],
            "delivery_cell": lines["delivery_cell"],
        }))
    if pos is not None and pos.num_rows:
        lines = resolve_pos(complete(pos, POS_TRANSACTIONS, dims.timezone), dims.identities)
        parts.append(pa.table({
            "ts": lines["txn_ts"], "channel": pa.array(["offline"] * lines.num_rows),
            "store_id": lines["store_id"], "platform": pa.nulls(lines.num_rows, pa.string()),
            "order_id": lines["txn_id"], "line_no": lines["line_no"], "is_refund": lines["is_refund"],
            "sku_id": lines["sku_id"], "quantity": lines["quantity"], "unit_price": lines["unit_price"],
            "list_price": lines["list_price"], "promo_id": lines["promo_id"], "member_id": lines["member_id"],
            "resolution": lines["resolution"], "delivery_cell": pa.nulls(lines.num_rows, pa.string()),
        }))
    if not parts:
        return complete(pa.table({c.name: pa.array([], c.type) for c in SALES_LINES.columns}), SALES_LINES,
                        dims.timezone)
    lines = pa.concat_tables(parts)
    revenue = pc.multiply(pc.cast(lines["quantity"], pa.float64()), lines["unit_price"])
    lines = lines.append_column("revenue", pc.round(revenue, 2))
    lines = lines.append_column("dt", pa.array([day] * lines.num_rows, pa.date32()))
    lines = lines.sort_by([("ts", "ascending"), ("channel", "ascending"), ("order_id", "ascending"),
                           ("line_no", "ascending"), ("is_refund", "ascending")])
    return complete(lines, SALES_LINES, dims.timezone)


def _active_on(table: pa.Table, first: str, last: str, day: dt.date) -> pa.Array:
    d = pa.scalar(day, pa.date32())
    starts = pc.or_kleene(pc.is_null(table[first]), pc.less_equal(table[first], d))
    ends = pc.or_kleene(pc.is_null(table[last]), pc.greater_equal(table[last], d))
    return pc.and_(starts, ends)


def list_prices_on(dims: Dimensions, day: dt.date) -> pa.Table:
    """sku_id → list price valid on `day` (the prices table, else the launch list price)."""
    return list_prices(dims.products, dims.prices, day)


def list_prices(products: pa.Table, prices: pa.Table | None, day: dt.date) -> pa.Table:
    """sku_id → list price valid on `day`: the latest prices row in force, else products.list_price."""
    base = products.select(["sku_id", "list_price"])
    if prices is None or prices.num_rows == 0:
        return base
    valid = prices.filter(_active_on(prices, "valid_from", "valid_to", day))
    latest = valid.group_by("sku_id").aggregate([("valid_from", "max")]).rename_columns(["sku_id", "valid_from"])
    current = valid.join(latest, keys=["sku_id", "valid_from"], join_type="inner").select(["sku_id", "list_price"])
    current = current.rename_columns(["sku_id", "current_price"])
    joined = base.join(current, keys="sku_id", join_type="left outer")
    return pa.table({"sku_id": joined["sku_id"], "list_price": pc.coalesce(joined["current_price"], joined["list_price"])})


def ranged_pairs(dims: Dimensions, day: dt.date, recent_pairs: pa.Table | None) -> pa.Table:
    """(store_id, sku_id) ranged on `day`: from the assortment table, else the pairs that sold
    within the ranging window (given as `recent_pairs`); only SKUs launched and not ended."""
    if dims.assortment is not None:
        pairs = dims.assortment.filter(_active_on(dims.assortment, "valid_from", "valid_to", day))
        pairs = pairs.select(["store_id", "sku_id"])
    elif recent_pairs is not None:
        pairs = recent_pairs.select(["store_id", "sku_id"])
    else:
        return pa.table({"store_id": pa.array([], pa.string()), "sku_id": pa.array([], pa.string())})
    live = dims.products.filter(_active_on(dims.products, "launch_date", "end_date", day)).select(["sku_id"])
    return pairs.join(live, keys="sku_id", join_type="inner").group_by(["store_id", "sku_id"]).aggregate([])


def offers_on(dims: Dimensions, day: dt.date, rows: pa.Table) -> np.ndarray:
    """Deepest promotion discount on offer for each (store_id, sku_id) row on `day`."""
    return offer_discounts(dims.promotions, dims.stores, dims.products, day, rows)


def offer_discounts(promotions: pa.Table, stores: pa.Table, products: pa.Table, day: dt.date,
                    rows: pa.Table) -> np.ndarray:
    """Deepest discount of the promotions running on `day` for each (store_id, sku_id) row:
    a promotion applies where its channel, platform, category and SKU scope (when set) match.
    Used for the curated history and for the planned offers of forecast days alike."""
    promos = promotions.filter(_active_on(promotions, "start_date", "end_date", day))
    best = np.zeros(rows.num_rows)
    if promos.num_rows == 0 or rows.num_rows == 0:
        return best
    store_info = rows.select(["store_id", "sku_id"]).append_column("_row", pa.array(np.arange(rows.num_rows)))
    store_info = store_info.join(stores.select(["store_id", "channel", "platform"]), keys="store_id",
                                 join_type="left outer")
    store_info = store_info.join(products.select(["sku_id", "category"]), keys="sku_id", join_type="left outer")
    store_info = store_info.sort_by("_row")
    channel = np.asarray(store_info["channel"].to_pylist(), dtype=object)
    platform = np.asarray(store_info["platform"].to_pylist(), dtype=object)
    category = np.asarray(store_info["category"].to_pylist(), dtype=object)
    sku = np.asarray(store_info["sku_id"].to_pylist(), dtype=object)
    for p in promos.to_pylist():
        match = np.ones(rows.num_rows, bool) if p["channel"] == "all" else channel == p["channel"]
        if p.get("platform"):
            match &= platform == p["platform"]
        if p.get("category"):
            match &= category == p["category"]
        if p.get("sku_id"):
            match &= sku == p["sku_id"]
        best = np.where(match, np.maximum(best, p["discount_pct"]), best)
    return best


def demand_daily(lines: pa.Table, dims: Dimensions, day: dt.date, ranged: pa.Table) -> pa.Table:
    """Units per store × SKU on `day`, with zero rows for ranged SKUs in stores that traded: an
    offline store that sold something that day (else it is taken as closed, and has no rows), and
    every online shop within its open and close dates (a shop on a platform never closes: a day
    without an order is a day of zero sales)."""
    q = lines["quantity"]
    sold = pc.if_else(lines["is_refund"], 0, q)
    refunded = pc.if_else(lines["is_refund"], pc.negate(q), 0)
    sale_revenue = pc.if_else(lines["is_refund"], 0.0, lines["revenue"])
    work = pa.table({"store_id": lines["store_id"], "sku_id": lines["sku_id"], "channel": lines["channel"],
                     "sold": pc.cast(sold, pa.int64()), "refunded": pc.cast(refunded, pa.int64()),
                     "revenue": lines["revenue"], "sale_revenue": sale_revenue})
    agg = work.group_by(["store_id", "sku_id", "channel"]).aggregate(
        [("sold", "sum"), ("refunded", "sum"), ("revenue", "sum"), ("sale_revenue", "sum")])
    stores = dims.stores
    shops = stores.filter(pc.and_(pc.equal(stores["channel"], "online"),
                                  _active_on(stores, "open_date", "close_date", day)))["store_id"]
    traded = lines.filter(pc.invert(lines["is_refund"]))["store_id"]
    open_stores = pa.table({"store_id": pc.unique(pa.concat_arrays([traded.combine_chunks().cast(pa.string()),
                                                                    shops.combine_chunks().cast(pa.string())]))})
    zero = ranged.join(open_stores, keys="store_id", join_type="inner")
    zero = zero.join(agg.select(["store_id", "sku_id"]), keys=["store_id", "sku_id"], join_type="left anti")
    zero = zero.select(["store_id", "sku_id"]).join(dims.stores.select(["store_id", "channel"]), keys="store_id",
                                                    join_type="left outer")
    n0 = zero.num_rows
    zeros = pa.table({"store_id": zero["store_id"], "sku_id": zero["sku_id"], "channel": zero["channel"],
                      "sold_sum": pa.array(np.zeros(n0, np.int64)), "refunded_sum": pa.array(np.zeros(n0, np.int64)),
                      "revenue_sum": pa.array(np.zeros(n0)), "sale_revenue_sum": pa.array(np.zeros(n0))})
    rows = pa.concat_tables([agg, zeros]) if n0 else agg
    sold_sum = rows["sold_sum"]
    avg_price = pc.if_else(pc.greater(sold_sum, 0),
                           pc.round(pc.divide(rows["sale_revenue_sum"], pc.cast(sold_sum, pa.float64())), 2), None)
    prices = list_prices_on(dims, day)
    rows = rows.append_column("avg_unit_price", avg_price).join(prices, keys="sku_id", join_type="left outer")
    rows = rows.sort_by([("store_id", "ascending"), ("sku_id", "ascending")])
    out = pa.table({
        "dt": pa.array([day] * rows.num_rows, pa.date32()), "store_id": rows["store_id"], "sku_id": rows["sku_id"],
        "channel": rows["channel"], "units_sold": rows["sold_sum"], "units_refunded": rows["refunded_sum"],
        "units_net": pc.subtract(rows["sold_sum"], rows["refunded_sum"]),
        "revenue_net": pc.round(rows["revenue_sum"], 2), "avg_unit_price": rows["avg_unit_price"],
        "list_price": rows["list_price"], "offer_discount_pct": pa.array(offers_on(dims, day, rows)),
    })
    return conform(out, DEMAND_DAILY)


def interactions(lines: pa.Table, day: dt.date) -> pa.Table:
    """Member × SKU × channel purchases on `day` (guests and anonymous buyers left out)."""
    members = lines.filter(pc.is_valid(lines["member_id"]))
    sale = pc.cast(pc.invert(members["is_refund"]), pa.int32())
    work = pa.table({"member_id": members["member_id"], "sku_id": members["sku_id"], "channel": members["channel"],
                     "quantity": pc.cast(members["quantity"], pa.int64()), "revenue": members["revenue"], "sale": sale})
    agg = work.group_by(["member_id", "sku_id", "channel"]).aggregate(
        [("quantity", "sum"), ("revenue", "sum"), ("sale", "sum")])
    agg = agg.sort_by([("member_id", "ascending"), ("sku_id", "ascending"), ("channel", "ascending")])
    out = pa.table({"dt": pa.array([day] * agg.num_rows, pa.date32()), "member_id": agg["member_id"],
                    "sku_id": agg["sku_id"], "channel": agg["channel"], "units": agg["quantity_sum"],
                    "revenue": pc.round(agg["revenue_sum"], 2), "lines": agg["sale_sum"]})
    return conform(out, INTERACTIONS)


def store_daily(lines: pa.Table, day: dt.date) -> pa.Table:
    """One row per store (or shop) that had lines on `day`."""
    work = pa.table({"store_id": lines["store_id"], "channel": lines["channel"],
                     "quantity": pc.cast(lines["quantity"], pa.int64()), "revenue": lines["revenue"],
                     "member": pc.cast(pc.is_valid(lines["member_id"]), pa.int32())})
    agg = work.group_by(["store_id", "channel"]).aggregate(
        [("quantity", "sum"), ("revenue", "sum"), ("quantity", "count"), ("member", "sum")])
    agg = agg.sort_by("store_id")
    out = pa.table({"dt": pa.array([day] * agg.num_rows, pa.date32()), "store_id": agg["store_id"],
                    "channel": agg["channel"], "units_net": agg["quantity_sum"],
                    "revenue_net": pc.round(agg["revenue_sum"], 2), "lines": agg["quantity_count"],
                    "member_lines": agg["member_sum"]})
    return conform(out, STORE_DAILY)


def merge_day(day: dt.date, online: pa.Table | None, pos: pa.Table | None, dims: Dimensions,
              recent_pairs: pa.Table | None = None) -> CuratedDay:
    """Every curated table of one day from that day's raw lines."""
    lines = unify_lines(online, pos, dims, day)
    ranged = ranged_pairs(dims, day, recent_pairs)
    return CuratedDay(day, lines, demand_daily(lines, dims, day, ranged), interactions(lines, day),
                      store_daily(lines, day))


def store_performance(daily: pa.Table, stores: pa.Table, sites: pa.Table | None, lake_end: dt.date) -> pa.Table:
    """Offline store results over the lake's history, joined to their site's features.

    revenue_annualised: net revenue of the last 365 days up to `lake_end` (or since the first
    sale, scaled to a year, for younger stores); revenue_first_12m: the first 365 days after the
    store's open_date when the lake covers them."""
    offline = daily.filter(pc.equal(daily["channel"], "offline"))
    frame = offline.select(["dt", "store_id", "revenue_net"]).to_pandas()
    info = stores.filter(pc.equal(stores["channel"], "offline")).to_pandas().set_index("store_id")
    rows = []
    lake_start = frame["dt"].min() if len(frame) else lake_end
    for store_id, g in frame.groupby("store_id", sort=True):
        first, last = g["dt"].min(), g["dt"].max()
        window_start = max(first, lake_end - dt.timedelta(days=364))
        in_window = g[g["dt"] >= window_start]["revenue_net"].sum()
        span = (lake_end - window_start).days + 1
        opened = info["open_date"].get(store_id) if store_id in info.index else None
        opened = opened if isinstance(opened, dt.date) else None
        first_12m = None
        start_12m = opened or first
        if start_12m >= lake_start and start_12m + dt.timedelta(days=364) <= lake_end:
            first_12m = float(g[(g["dt"] >= start_12m) & (g["dt"] <= start_12m + dt.timedelta(days=364))]["revenue_net"].sum())
        rows.append({"store_id": store_id, "open_date": opened, "first_dt": first, "last_dt": last,
                     "trading_days": int(len(g)), "revenue_observed": float(g["revenue_net"].sum()),
                     "revenue_annualised": float(in_window * 365.0 / span), "revenue_first_12m": first_12m})
    perf = pd.DataFrame(rows, columns=["store_id", "open_date", "first_dt", "last_dt", "trading_days",
                                       "revenue_observed", "revenue_annualised", "revenue_first_12m"])
    for col in ("city", "site_id", "format"):
        perf[col] = perf["store_id"].map(info[col]) if col in info.columns else None
    table = conform(perf, STORE_PERFORMANCE)
    if sites is not None and "site_id" in table.column_names:
        site_cols = [c for c in sites.column_names if c not in ("city",)]
        table = table.join(sites.select(site_cols), keys="site_id", join_type="left outer").sort_by("store_id")
    return table
