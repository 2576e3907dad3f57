"""A brand's own exports as raw tables: pure functions from the frames of a sales-lines export (and
optional products, customers and stores exports) to the contract's raw tables. `jobs/import_data.py`
reads the files and writes the lake.

A sales line needs a product id, a timestamp or a date, and a quantity (a line without one counts
as one unit); an order or ticket id, a customer id, a unit price and a shop are used when present.
Whatever the export lacks is derived from the lines, never invented row by row:

- stores: one per shop value (the file's name without a shop column), online or offline as asked;
- products: one per product id, listed at the median price it sold at, launched on its first sale;
  one category, `all`, when neither the lines nor a products file name one;
- members and identities: one member per customer id, linked through the shop's platform
  (online, `other` unless a stores file says) or the POS loyalty card (offline);
- a line without an order id is its own order; a date without a time is noon, local time.

Every problem is one `ImportProblem` per table × column × rule with its count, never one per row.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lake.contract import DEFAULT_PLATFORM

FIELDS = {
    "product_id": "product (SKU) id — required",
    "timestamp": "when the line was sold: a timestamp or a date — required",
    "quantity": "units on the line; negative for a return [default: 1 a line]",
    "order_id": "order or ticket id [default: each line its own order]",
    "customer_id": "the buyer's id in the brand's data [default: guests]",
    "price": "price paid per unit after discounts [else the products file's list price, or --unit-price]",
    "shop": "the online shop or store of the line [default: one, named after the file]",
    "category": "the product's category [else the products file's, else all]",
    "product_name": "the product's name",
}
"""The fields of a sales-lines export, by their canonical names (the column mapping's keys)."""


@dataclass
class ImportProblem:
    """One rule broken by `rows` rows of one table's column: what is wrong and how to fix it."""

    table: str
    column: str
    rule: str
    rows: int
    message: str

    def line(self) -> str:
        return f"{self.table:<10} {self.column:<14} {self.rule:<16} {self.rows:>9,} rows  {self.message}"


@dataclass
class Imported:
    """The raw tables made from the exports, the problems found and what was derived."""

    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # dimension tables
    lines: pd.DataFrame | None = None  # online_orders or pos_transactions rows, with a `dt` column
    fact_table: str = "online_orders"
    problems: list[ImportProblem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def as_ids(values: pd.Series) -> pd.Series:
    """Ids of any type as strings: integers without a decimal point, text stripped; missing stays missing."""
    if pd.api.types.is_float_dtype(values):
        whole = values.dropna()
        if (whole == np.round(whole)).all():
            values = values.astype("Int64")
    text = values.astype("string").str.strip()
    return text.mask(text == "")


def local_timestamps(values: pd.Series, timezone: str) -> tuple[pd.Series, bool]:
    """Timestamps in the brand's time zone, and whether the export had dates only (then noon:
    a line stays on its date whatever the time zone)."""
    parsed = pd.to_datetime(values, errors="coerce", format="mixed") if not pd.api.types.is_datetime64_any_dtype(values) \
        else values
    if getattr(parsed.dt, "tz", None) is not None:
        return parsed.dt.tz_convert(timezone), False
    present = parsed.dropna()
    dates_only = bool(len(present)) and bool((present == present.dt.normalize()).all())
    if dates_only:
        parsed = parsed + pd.Timedelta(hours=12)
    return parsed.dt.tz_localize(timezone, ambiguous="NaT", nonexistent="shift_forward"), dates_only


def sales_lines(export: pd.DataFrame, mapping: dict[str, str], *, source: str, channel: str, timezone: str,
                unit_price: float | None = None, products: pd.DataFrame | None = None,
                customers: pd.DataFrame | None = None, stores: pd.DataFrame | None = None) -> Imported:
    """The raw tables of a sales-lines export. `mapping`: canonical field → the export's column
    (fields not mapped are looked up under their own names). `source`: the export's name, for a
    shop column it lacks. Returns an Imported whose `problems` say what must be fixed first."""
    out = Imported(fact_table="online_orders" if channel == "online" else "pos_transactions")
    column = {f: mapping.get(f, f) for f in FIELDS}
    unknown = sorted(c for f, c in mapping.items() if f in FIELDS and c not in export.columns)
    for f in sorted(set(mapping) - set(FIELDS)):
        out.problems.append(ImportProblem("mapping", f, "unknown_field", 0,
                                          f"no field {f!r}; the fields are {', '.join(FIELDS)}"))
    for c in unknown:
        out.problems.append(ImportProblem("sales", c, "missing_column", len(export),
                                          f"the export has no column {c!r}; its columns: {', '.join(map(str, export.columns[:20]))}"))
    for f in ("product_id", "timestamp"):
        if column[f] not in export.columns and column[f] not in unknown:
            out.problems.append(ImportProblem("sales", f, "missing_column", len(export),
                                              f"map the export's {FIELDS[f].split(' — ')[0]} column: --column {f}=<its name>"))
    if out.problems:
        return out
    get = {f: export[c] for f, c in column.items() if c in export.columns}
    n = len(export)

    sku = as_ids(get["product_id"])
    ts, dates_only = local_timestamps(get["timestamp"], timezone)
    quantity = pd.to_numeric(get["quantity"], errors="coerce") if "quantity" in get else pd.Series(1.0, index=export.index)
    _count(out, "sales", column["product_id"], "missing", sku.isna(), "lines without a product id; fill or drop them")
    _count(out, "sales", column["timestamp"], "not_a_time", ts.isna(),
           "values that are not a date or a timestamp (or do not exist in the time zone); fix or drop them")
    if "quantity" in get:
        _count(out, "sales", column["quantity"], "not_a_number", quantity.isna(), "quantities that are not numbers")
        _count(out, "sales", column["quantity"], "not_whole", quantity.notna() & (quantity != np.round(quantity)),
               "quantities with a fraction; the lake counts whole units")
    zero = (quantity == 0).to_numpy()
    if zero.any():
        out.notes.append(f"{int(zero.sum()):,} lines with quantity 0 left out (no units sold)")

    price = pd.to_numeric(get["price"], errors="coerce") if "price" in get else pd.Series(np.nan, index=export.index)
    _count(out, "sales", column["price"], "negative", price < 0, "negative prices; a return has a negative quantity, not price")
    list_price = _list_prices(products, mapping) if products is not None else None
    if price.isna().any():
        fill = price.groupby(sku).transform("median")
        if list_price is not None:
            fill = fill.fillna(sku.map(list_price))
        if unit_price is not None:
            fill = fill.fillna(unit_price)
        filled = int((price.isna() & fill.notna()).sum())
        if filled:
            out.notes.append(f"{filled:,} lines without a price priced at their product's median price"
                             + (" or list price" if list_price is not None else "")
                             + (f" (or --unit-price {unit_price:g})" if unit_price is not None else ""))
        price = price.fillna(fill)
    _count(out, "sales", column["price"] if "price" in get else "price", "missing", price.isna(),
           "lines without a price and none to take (no price on the product's other lines, no products file with "
           "list_price); map the price column, give --products, or say --unit-price")
    if out.problems:
        return out

    keep = ~zero
    shop = as_ids(get["shop"]) if "shop" in get else pd.Series(source, index=export.index, dtype="string")
    customer = as_ids(get["customer_id"]) if "customer_id" in get else pd.Series(pd.NA, index=export.index, dtype="string")
    order = as_ids(get["order_id"]) if "order_id" in get else pd.Series(
        [f"{source}-L{i + 1}" for i in range(n)], index=export.index, dtype="string")
    lines = pd.DataFrame({"order_id": order, "ts": ts, "store_id": shop.fillna(source), "sku_id": sku,
                          "quantity": quantity.astype("Int64"), "unit_price": price.round(2),
                          "customer_id": customer})[keep].reset_index(drop=True)
    lines["is_refund"] = lines["quantity"] < 0
    lines["line_no"] = lines.groupby(["order_id", "is_refund"]).cumcount().astype("int32") + 1
    lines["dt"] = lines["ts"].dt.date
    if dates_only:
        out.notes.append("the export has dates only: each line is stamped 12:00 local time on its date")
    out.lines = _fact_rows(lines, channel)

    out.tables["stores"] = _stores(lines, channel, stores)
    category = get.get("category")
    out.tables["products"] = _products(lines, products, mapping, None if category is None else
                                       pd.Series(category.to_numpy(), index=sku.to_numpy()), list_price, out)
    if customer.notna().any():
        out.tables["members"], out.tables["identities"] = _members(lines, channel, out.tables["stores"], customers,
                                                                     mapping, out)
    return out


def _count(out: Imported, table: str, column: str, rule: str, mask: pd.Series, message: str) -> None:
    rows = int(np.asarray(mask, dtype=bool).sum())
    if rows:
        out.problems.append(ImportProblem(table, column, rule, rows, message))


def _list_prices(products: pd.DataFrame, mapping: dict[str, str]) -> pd.Series | None:
    pid = mapping.get("product_id", "product_id")
    if pid not in products.columns or "list_price" not in products.columns:
        return None
    return pd.Series(pd.to_numeric(products["list_price"], errors="coerce").to_numpy(), index=as_ids(products[pid]))


def _fact_rows(lines: pd.DataFrame, channel: str) -> pd.DataFrame:
    if channel == "online":
        return pd.DataFrame({"dt": lines["dt"], "order_id": lines["order_id"], "line_no": lines["line_no"],
                             "is_refund": lines["is_refund"], "order_ts": lines["ts"], "store_id": lines["store_id"],
                             "sku_id": lines["sku_id"], "quantity": lines["quantity"].astype("int32"),
                             "unit_price": lines["unit_price"], "buyer_id": lines["customer_id"]})
    return pd.DataFrame({"dt": lines["dt"], "txn_id": lines["order_id"], "line_no": lines["line_no"],
                         "is_refund": lines["is_refund"], "txn_ts": lines["ts"], "store_id": lines["store_id"],
                         "sku_id": lines["sku_id"], "quantity": lines["quantity"].astype("int32"),
                         "unit_price": lines["unit_price"], "member_card_id": lines["customer_id"]})


def _stores(lines: pd.DataFrame, channel: str, given: pd.DataFrame | None) -> pd.DataFrame:
    """The stores file's rows when given (ids as strings), else one per shop of the lines."""
    if given is not None:
        return given.assign(store_id=as_ids(given["store_id"]))
    ids = sorted(lines["store_id"].dropna().unique())
    online = channel == "online"
    return pd.DataFrame({"store_id": ids, "channel": channel, "platform": DEFAULT_PLATFORM if online else None,
                         "city": None, "lat": np.nan, "lon": np.nan})


def _products(lines: pd.DataFrame, given: pd.DataFrame | None, mapping: dict[str, str], category: pd.Series | None,
              list_price: pd.Series | None, out: Imported) -> pd.DataFrame:
    sold = lines[~lines["is_refund"]] if (~lines["is_refund"]).any() else lines
    derived = pd.DataFrame({"sku_id": sorted(lines["sku_id"].unique())}).set_index("sku_id")
    derived["list_price"] = sold.groupby("sku_id")["unit_price"].median()
    derived["launch_date"] = lines.groupby("sku_id")["dt"].min()
    if category is not None:
        derived["category"] = category[~category.index.duplicated()].reindex(derived.index).astype("string")
    if given is not None:  # the products file's values win where it has them
        pid = mapping.get("product_id", "product_id")
        table = given.assign(sku_id=as_ids(given[pid])).drop_duplicates("sku_id").set_index("sku_id")
        for name in ("category", "list_price", "launch_date", "subcategory", "sku_name", "style"):
            if name in table.columns:
                values = table[name].reindex(derived.index)
                derived[name] = values.combine_first(derived[name]) if name in derived.columns else values
    if "category" not in derived.columns or derived["category"].isna().all():
        derived["category"] = "all"
        out.notes.append("no product category in the exports: every product is in one category, all")
    derived["category"] = derived["category"].fillna("all")
    if list_price is not None:
        derived["list_price"] = derived["list_price"].fillna(list_price.reindex(derived.index))
    derived["launch_date"] = pd.to_datetime(derived["launch_date"]).dt.date
    return derived.reset_index()


def _members(lines: pd.DataFrame, channel: str, stores: pd.DataFrame, given: pd.DataFrame | None,
             mapping: dict[str, str], out: Imported) -> tuple[pd.DataFrame, pd.DataFrame]:
    buyers = lines.dropna(subset=["customer_id"])
    first = buyers.groupby("customer_id")["dt"].min()
    members = pd.DataFrame({"member_id": first.index.astype(str), "join_date": first.to_numpy()})
    if given is not None:
        cid = mapping.get("customer_id", "customer_id")
        if cid in given.columns:
            extra = given.assign(member_id=as_ids(given[cid])).drop_duplicates("member_id")
            # the contract's member columns and the brand's own (a tier, a region: segments may use them)
            keep = [c for c in extra.columns if c not in (cid, "member_id")]
            for c in keep:
                if extra[c].dtype == object:
                    extra[c] = extra[c].astype("string")
            members = members.merge(extra[["member_id", *keep]], on="member_id", how="left", suffixes=("", "_given"))
            if "join_date_given" in members.columns:
                members["join_date"] = pd.to_datetime(members.pop("join_date_given")).dt.date.fillna(members["join_date"])
    if channel == "online":
        platform = stores.set_index("store_id")["platform"].fillna(DEFAULT_PLATFORM) if "platform" in stores.columns \
            else pd.Series(DEFAULT_PLATFORM, index=stores["store_id"])
        links = buyers.assign(channel=buyers["store_id"].map(platform).fillna(DEFAULT_PLATFORM))
    else:
        links = buyers.assign(channel="pos")
    identities = links[["channel", "customer_id"]].drop_duplicates().rename(columns={"customer_id": "channel_user_id"})
    identities["member_id"] = identities["channel_user_id"]
    out.notes.append(f"{len(members):,} customers became members, each linked to their own id")
    return members, identities.reset_index(drop=True)
