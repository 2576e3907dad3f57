"""The lake's contract: every raw and curated table, its columns, types, keys and partitioning.

This module is the single source of truth. Validation enforces it, the merge reads it, the
generator writes it and `docs/lake.md` documents it (a test keeps the two in step). A brand that
brings its own data must provide the required columns; optional columns may be missing entirely
and every later step still works.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

LOCAL_TZ = "Asia/Shanghai"
"""Timestamps are stored in the brand's local time zone; the `dt` partition is the local date."""

TIMESTAMP = pa.timestamp("us", tz=LOCAL_TZ)

ONLINE_PLATFORMS = ("tmall", "jd", "douyin", "miniprogram")
"""The platforms the generator's brand sells on. Platforms and identity channels are an open
vocabulary: any name works (shopify, amazon, the brand's own site), and `other` is the default."""
DEFAULT_PLATFORM = "other"
IDENTITY_CHANNELS = (*ONLINE_PLATFORMS, "pos", "phone", DEFAULT_PLATFORM)


@dataclass(frozen=True)
class Column:
    """One column of a table: its name, Arrow type, whether it is required, and what it means."""

    name: str
    type: pa.DataType
    required: bool
    doc: str
    allowed: tuple[str, ...] | None = None  # closed vocabulary for string columns
    nullable: bool | None = None  # default: optional columns may be empty, required ones not

    @property
    def allows_null(self) -> bool:
        return (not self.required) if self.nullable is None else self.nullable


@dataclass(frozen=True)
class Table:
    """A table of the lake. `partitioned` fact tables live under `dt=YYYY-MM-DD/` folders."""

    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    doc: str
    partitioned: bool = False
    required_table: bool = True
    foreign_keys: dict[str, tuple[str, str]] = field(default_factory=dict)
    ts_column: str | None = None  # timestamp that must fall on the partition's local date

    @property
    def required_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.required)

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"table {self.name!r} has no column {name!r}")

    def schema(self, present: list[str] | None = None) -> pa.Schema:
        """The Arrow schema of the table, restricted to `present` columns when given."""
        cols = [c for c in self.columns if present is None or c.name in present]
        return pa.schema([pa.field(c.name, c.type, nullable=c.allows_null) for c in cols])


def _c(name: str, type_: pa.DataType, required: bool, doc: str, allowed: tuple[str, ...] | None = None,
       nullable: bool | None = None) -> Column:
    return Column(name, type_, required, doc, allowed, nullable)


STR, F64, I32, BOOL, DATE = pa.string(), pa.float64(), pa.int32(), pa.bool_(), pa.date32()

PRODUCTS = Table(
    "products",
    (
        _c("sku_id", STR, True, "Stock-keeping unit id, unique across the brand."),
        _c("category", STR, True, "Top level of the category tree (e.g. tops, beauty)."),
        _c("list_price", F64, True, "List price at launch per unit incl. VAT, in the lake's currency.", None),
        _c("launch_date", DATE, True, "First day the SKU may be sold."),
        _c("subcategory", STR, False, "Second level of the category tree."),
        _c("sku_name", STR, False, "Display name."),
        _c("style", STR, False, "Design line (e.g. classic, trend, sport)."),
        _c("end_date", DATE, False, "Last day the SKU may be sold; empty while active."),
        _c("channel_availability", STR, False, "Where it is sold; empty means both.",
           ("both", "online_only", "offline_only")),
    ),
    key=("sku_id",),
    doc="The catalogue: one row per SKU.",
)

STORES = Table(
    "stores",
    (
        _c("store_id", STR, True, "Id of an offline store or an online shop."),
        _c("channel", STR, True, "offline for a physical store, online for a shop on a platform.",
           ("offline", "online")),
        _c("platform", STR, False, "For online shops: the platform, any name (tmall, jd, douyin, miniprogram, "
           "shopify, …); empty means other. Buyers link to members through identities of the same channel."),
        _c("store_name", STR, False, "Display name."),
        _c("format", STR, False, "Offline format.", ("flagship", "mall", "street", "outlet")),
        _c("city", STR, True, "City of an offline store; empty for online shops.", nullable=True),
        _c("lat", F64, True, "Latitude of an offline store, WGS84 degrees; empty for online shops.", nullable=True),
        _c("lon", F64, True, "Longitude of an offline store, WGS84 degrees; empty for online shops.", nullable=True),
        _c("site_id", STR, False, "Cell id of the store's site (joins candidate_sites.site_id)."),
        _c("open_date", DATE, False, "First trading day; empty means open before the lake starts."),
        _c("close_date", DATE, False, "Last trading day; empty while trading."),
        _c("floor_area_sqm", F64, False, "Sales floor area, square metres."),
    ),
    key=("store_id",),
    doc="Offline stores and online shops (one per platform).",
)

MEMBERS = Table(
    "members",
    (
        _c("member_id", STR, True, "The OneID: one id per person across all channels."),
        _c("join_date", DATE, True, "Day the person joined the membership."),
        _c("city", STR, False, "Home city."),
        _c("home_cell", STR, False, "Cell id of the home or usual delivery address."),
        _c("age_band", STR, False, "Age band, any labels the CRM uses (the generator writes 18-24 … 45+)."),
        _c("city_tier", I32, False, "Tier of the home city (1 = largest)."),
        _c("price_sensitivity", STR, False, "CRM label of price sensitivity, any labels (low / mid / high, …)."),
    ),
    key=("member_id",),
    doc="The brand's member base (first-party CRM). Needed by the matching family.",
    required_table=False,
)

IDENTITIES = Table(
    "identities",
    (
        _c("channel", STR, True, "Where the id comes from: an online shop's platform (any name; other for "
           "shops without one), pos for loyalty cards, phone for phone hashes."),
        _c("channel_user_id", STR, True, "The id in that channel: platform account, POS loyalty card or phone hash."),
        _c("member_id", STR, True, "The member the id belongs to."),
        _c("linked_at", TIMESTAMP, False, "When the link was made."),
    ),
    key=("channel", "channel_user_id"),
    doc=("The data bank: channel user ids linked to a member OneID. One id maps to one member. Without it "
         "every line is a guest's (the matching family needs it)."),
    required_table=False,
    foreign_keys={"member_id": ("members", "member_id")},
)

ONLINE_ORDERS = Table(
    "online_orders",
    (
        _c("order_id", STR, True, "Platform order id."),
        _c("line_no", I32, True, "Line within the order (1-based)."),
        _c("is_refund", BOOL, True, "True for a refund of the same order line (quantity is negative)."),
        _c("order_ts", TIMESTAMP, True, "When the order (or refund) was placed, local time."),
        _c("store_id", STR, True, "The online shop (stores.store_id with channel = online)."),
        _c("sku_id", STR, True, "What was bought."),
        _c("quantity", I32, True, "Units; negative only on refund lines."),
        _c("unit_price", F64, True, "Price paid per unit after all discounts."),
        _c("buyer_id", STR, True, "Platform account of the buyer; empty for guest checkout.", nullable=True),
        _c("phone_hash", STR, False, "Hash of the receiver's phone number, where the platform shares it."),
        _c("list_price", F64, False, "List price per unit on the day."),
        _c("discount_amount", F64, False, "Total discount on the line."),
        _c("promo_id", STR, False, "Promotion applied (promotions.promo_id)."),
        _c("delivery_cell", STR, False, "Cell id of the delivery address."),
    ),
    key=("order_id", "line_no", "is_refund"),
    doc="Order lines from every online shop.",
    partitioned=True,
    foreign_keys={"store_id": ("stores", "store_id"), "sku_id": ("products", "sku_id"),
                  "promo_id": ("promotions", "promo_id")},
    ts_column="order_ts",
)

POS_TRANSACTIONS = Table(
    "pos_transactions",
    (
        _c("txn_id", STR, True, "Till transaction id."),
        _c("line_no", I32, True, "Line within the transaction (1-based)."),
        _c("is_refund", BOOL, True, "True for a return of the same line (quantity is negative)."),
        _c("txn_ts", TIMESTAMP, True, "When the transaction happened, local time."),
        _c("store_id", STR, True, "The offline store."),
        _c("sku_id", STR, True, "What was bought."),
        _c("quantity", I32, True, "Units; negative only on refund lines."),
        _c("unit_price", F64, True, "Price paid per unit after all discounts."),
        _c("member_card_id", STR, True, "Loyalty card scanned at the till; empty when anonymous.", nullable=True),
        _c("list_price", F64, False, "List price per unit on the day."),
        _c("discount_amount", F64, False, "Total discount on the line."),
        _c("promo_id", STR, False, "Promotion applied."),
    ),
    key=("txn_id", "line_no", "is_refund"),
    doc="Point-of-sale lines from the offline stores.",
    partitioned=True,
    foreign_keys={"store_id": ("stores", "store_id"), "sku_id": ("products", "sku_id"),
                  "promo_id": ("promotions", "promo_id")},
    ts_column="txn_ts",
)

PROMOTIONS = Table(
    "promotions",
    (
        _c("promo_id", STR, True, "Promotion id."),
        _c("start_date", DATE, True, "First day."),
        _c("end_date", DATE, True, "Last day (inclusive)."),
        _c("channel", STR, True, "Where it runs.", ("online", "offline", "all")),
        _c("discount_pct", F64, True, "Discount off list price, a fraction in [0, 0.9]."),
        _c("name", STR, False, "Display name."),
        _c("platform", STR, False, "Only on this platform; empty means every shop of the channel."),
        _c("category", STR, False, "Only this category; empty means every category."),
        _c("sku_id", STR, False, "Only this SKU."),
        _c("event", STR, False, "Retail event it belongs to (calendar.event)."),
    ),
    key=("promo_id",),
    doc="Price promotions by period, channel and scope. Without it, no line had a promotion.",
    required_table=False,
)

PRICES = Table(
    "prices",
    (
        _c("sku_id", STR, True, "The SKU."),
        _c("valid_from", DATE, True, "First day of this list price."),
        _c("list_price", F64, True, "List price per unit."),
        _c("valid_to", DATE, False, "Last day; empty while current."),
    ),
    key=("sku_id", "valid_from"),
    doc="List-price history. Without it, products.list_price holds for the whole period.",
    required_table=False,
    foreign_keys={"sku_id": ("products", "sku_id")},
)

CALENDAR = Table(
    "calendar",
    (
        _c("date", DATE, True, "The day."),
        _c("event", STR, True, "Retail event or public holiday, any name (618, black_friday, …); each becomes demand features."),
        _c("phase", STR, True, "Where in the event the day falls.",
           ("presale", "peak", "post", "closure", "holiday")),
    ),
    key=("date", "event"),
    doc=("Retail events and holidays of the brand's country: one row per day an event touches. Without it, "
         "the demand family has no event features."),
    required_table=False,
)

CANDIDATE_SITES = Table(
    "candidate_sites",
    (
        _c("site_id", STR, True, "Cell id (an H3 index at resolution 8 in generated data)."),
        _c("city", STR, True, "City."),
        _c("lat", F64, True, "Latitude of the cell centre."),
        _c("lon", F64, True, "Longitude of the cell centre."),
        _c("population", F64, False, "Residents in the cell."),
        _c("daytime_population", F64, False, "People present in working hours."),
        _c("footfall_index", F64, False, "Relative pedestrian traffic (city median = 1)."),
        _c("competitors", F64, False, "Competing stores in the cell."),
        _c("complementary_shops", F64, False, "Shops that draw the same consumers."),
        _c("rent_per_sqm_month", F64, False, "Typical retail rent per m² per month."),
        _c("income_index", F64, False, "Relative household income (city median = 1)."),
    ),
    key=("site_id",),
    doc=("Cells where a store could stand, with numeric area features. Any further numeric "
         "column is kept and used as a feature. Needed by the location family."),
    required_table=False,
)

ASSORTMENT = Table(
    "assortment",
    (
        _c("store_id", STR, True, "The store or shop."),
        _c("sku_id", STR, True, "A SKU it carries."),
        _c("valid_from", DATE, True, "First day the SKU is ranged there."),
        _c("valid_to", DATE, False, "Last day; empty while ranged."),
    ),
    key=("store_id", "sku_id", "valid_from"),
    doc=("Ranging: which SKUs each store carries when. Optional: without it, a SKU counts as "
         "ranged in a store on a day when it sold there within the 56 days up to that day."),
    required_table=False,
    foreign_keys={"store_id": ("stores", "store_id"), "sku_id": ("products", "sku_id")},
)

RAW_TABLES: dict[str, Table] = {
    t.name: t
    for t in (PRODUCTS, STORES, MEMBERS, IDENTITIES, ONLINE_ORDERS, POS_TRANSACTIONS,
              PROMOTIONS, PRICES, CALENDAR, CANDIDATE_SITES, ASSORTMENT)
}
FACT_TABLES = tuple(name for name, t in RAW_TABLES.items() if t.partitioned)
DIMENSION_TABLES = tuple(name for name, t in RAW_TABLES.items() if not t.partitioned)


# --- curated tables (written by the merge; documented in docs/lake.md) ---------------------------

SALES_LINES = Table(
    "sales_lines",
    (
        _c("dt", DATE, True, "Local date of the line."),
        _c("ts", TIMESTAMP, True, "Local time of the line."),
        _c("channel", STR, True, "online or offline.", ("online", "offline")),
        _c("store_id", STR, True, "Store or online shop."),
        _c("platform", STR, False, "Platform of an online shop."),
        _c("order_id", STR, True, "Order or till transaction id."),
        _c("line_no", I32, True, "Line within the order."),
        _c("is_refund", BOOL, True, "Refund line (quantity negative)."),
        _c("sku_id", STR, True, "SKU."),
        _c("quantity", I32, True, "Signed units: refunds are negative, so sums are net."),
        _c("unit_price", F64, True, "Paid price per unit."),
        _c("revenue", F64, True, "quantity × unit_price (negative for refunds)."),
        _c("list_price", F64, False, "List price per unit on the day."),
        _c("promo_id", STR, False, "Promotion applied."),
        _c("member_id", STR, False, "Resolved OneID; empty for guests and anonymous buyers."),
        _c("resolution", STR, True, "How the buyer was resolved.",
           ("channel_id", "phone", "guest", "anonymous")),
        _c("delivery_cell", STR, False, "Delivery cell of an online order."),
    ),
    key=("channel", "order_id", "line_no", "is_refund"),
    doc="Online and offline lines in one shape, each with its resolved OneID.",
    partitioned=True,
)

DEMAND_DAILY = Table(
    "demand_daily",
    (
        _c("dt", DATE, True, "Local date."),
        _c("store_id", STR, True, "Store or online shop."),
        _c("sku_id", STR, True, "SKU."),
        _c("channel", STR, True, "online or offline."),
        _c("units_sold", I32, True, "Units on sale lines (gross demand)."),
        _c("units_refunded", I32, True, "Units refunded on that day (from any earlier sale)."),
        _c("units_net", I32, True, "units_sold − units_refunded."),
        _c("revenue_net", F64, True, "Net revenue."),
        _c("avg_unit_price", F64, False, "Mean paid price of sale lines; empty on zero days."),
        _c("list_price", F64, False, "List price on the day."),
        _c("offer_discount_pct", F64, True, "Deepest promotion on offer for the SKU there that day."),
    ),
    key=("dt", "store_id", "sku_id"),
    doc=("Units per store × SKU × day. A zero row exists only where the SKU is ranged and the "
         "store was open (it sold anything that day)."),
    partitioned=True,
)

INTERACTIONS = Table(
    "interactions",
    (
        _c("dt", DATE, True, "Local date."),
        _c("member_id", STR, True, "OneID."),
        _c("sku_id", STR, True, "SKU."),
        _c("channel", STR, True, "online or offline."),
        _c("units", I32, True, "Net units."),
        _c("revenue", F64, True, "Net revenue."),
        _c("lines", I32, True, "Sale lines."),
    ),
    key=("dt", "member_id", "sku_id", "channel"),
    doc="Member × item purchases per day and channel, for matching.",
    partitioned=True,
)

STORE_DAILY = Table(
    "store_daily",
    (
        _c("dt", DATE, True, "Local date."),
        _c("store_id", STR, True, "Store or online shop."),
        _c("channel", STR, True, "online or offline."),
        _c("units_net", I32, True, "Net units."),
        _c("revenue_net", F64, True, "Net revenue."),
        _c("lines", I32, True, "Lines."),
        _c("member_lines", I32, True, "Lines resolved to a member."),
    ),
    key=("dt", "store_id"),
    doc="One row per store and trading day.",
    partitioned=True,
)

STORE_PERFORMANCE = Table(
    "store_performance",
    (
        _c("store_id", STR, True, "Offline store."),
        _c("city", STR, False, "City."),
        _c("site_id", STR, False, "Site cell."),
        _c("format", STR, False, "Format."),
        _c("open_date", DATE, False, "First trading day (from stores, else first sale)."),
        _c("first_dt", DATE, True, "First day with sales in the lake."),
        _c("last_dt", DATE, True, "Last day with sales in the lake."),
        _c("trading_days", I32, True, "Days with sales."),
        _c("revenue_observed", F64, True, "Net revenue over all trading days."),
        _c("revenue_annualised", F64, True, "Mean daily net revenue over the last 365 trading days × 365."),
        _c("revenue_first_12m", F64, False, "Net revenue in the first 365 days after opening, when the lake covers them."),
    ),
    key=("store_id",),
    doc="Offline store performance joined to the features of its site (all candidate_sites columns).",
)

CURATED_TABLES: dict[str, Table] = {
    t.name: t for t in (SALES_LINES, DEMAND_DAILY, INTERACTIONS, STORE_DAILY, STORE_PERFORMANCE)
}


def in_zone(target: pa.DataType, timezone: str | None) -> pa.DataType:
    """A contract type with its time zone set to the brand's (settings.yaml), when given."""
    return pa.timestamp(target.unit, tz=timezone) if timezone and pa.types.is_timestamp(target) else target


def same_type(actual: pa.DataType, target: pa.DataType) -> bool:
    """Whether a column already has a contract type: timestamps of its unit count in any zone
    (the zone is the brand's, and a zoned timestamp is an instant whatever zone it shows)."""
    if pa.types.is_timestamp(target) and pa.types.is_timestamp(actual):
        return actual.unit == target.unit and actual.tz is not None
    return actual == target


def cast_column(column, target: pa.DataType):
    """Cast one column to a contract type. Naive timestamps are local time in the target's zone
    (not UTC, which is what a plain Arrow cast to a zoned type assumes). Raises pyarrow errors on
    impossible casts."""
    import pyarrow.compute as pc

    if pa.types.is_timestamp(target) and pa.types.is_timestamp(column.type) and column.type.tz is None:
        return pc.assume_timezone(column.cast(pa.timestamp(target.unit)), target.tz, ambiguous="earliest",
                                  nonexistent="earliest")
    return column.cast(target)


def conform(frame, table: Table, *, keep_extra: bool = False, timezone: str | None = None) -> pa.Table:
    """An Arrow table with the contract's columns of `table` (those present in `frame`), cast
    to the contract's types and in contract order; timestamps in `timezone` (the brand's, from
    settings.yaml; naive ones are local time there), else the contract's default zone. Raises
    KeyError when a required column is missing. `frame` may be a pandas DataFrame or an Arrow
    table."""
    data = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
    missing = [c for c in table.required_columns if c not in data.column_names]
    if missing:
        raise KeyError(f"{table.name}: required columns missing: {', '.join(missing)}")
    names = [c.name for c in table.columns if c.name in data.column_names]
    if keep_extra:
        names += [n for n in data.column_names if n not in names]
    arrays, fields = [], []
    for name in names:
        column = data.column(name)
        target = in_zone(table.column(name).type, timezone) if name in {c.name for c in table.columns} \
            else column.type
        if column.type != target:
            column = cast_column(column, target)
        arrays.append(column)
        fields.append(pa.field(name, target))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def empty(table: Table) -> pa.Table:
    """A table of the contract's full schema with no rows: what an optional table the brand does
    not have reads as (no placeholder rows)."""
    return table.schema().empty_table()


def complete(data: pa.Table, table: Table, timezone: str | None = None, keep_extra: bool = False) -> pa.Table:
    """`conform`, then add every missing optional column as nulls of its contract type, so code
    downstream can rely on the full column set of a lake that carries only required columns.
    `keep_extra`: the brand's own columns stay too (after the contract's)."""
    typed = conform(data, table, timezone=timezone, keep_extra=keep_extra)
    for col in table.columns:
        if col.name not in typed.column_names:
            kind = in_zone(col.type, timezone)
            typed = typed.append_column(pa.field(col.name, kind), pa.nulls(typed.num_rows, kind))
    names = [c.name for c in table.columns]
    return typed.select(names + ([n for n in typed.column_names if n not in names] if keep_extra else []))


def _type_name(t: pa.DataType) -> str:
    if pa.types.is_timestamp(t):
        return f"timestamp (µs, {t.tz})"
    return {"string": "string", "double": "float64", "int32": "int32", "bool": "bool",
            "date32[day]": "date"}.get(str(t), str(t))


def markdown(table: Table) -> str:
    """The table's columns as a Markdown table (docs/lake.md embeds exactly this)."""
    rows = ["| column | type | required | meaning |", "| --- | --- | --- | --- |"]
    for c in table.columns:
        need = "yes" if c.required and not c.allows_null else ("yes, may be empty" if c.required else "no")
        meaning = c.doc + (f" One of: {', '.join(c.allowed)}." if c.allowed else "")
        rows.append(f"| `{c.name}` | {_type_name(c.type)} | {need} | {meaning} |")
    return "\n".join(rows)
