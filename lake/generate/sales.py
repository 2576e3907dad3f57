"""Simulate the sales of one city over a run of days: online order lines, POS lines, and the
expected demand they were drawn from.

The expected units of SKU i in store (or online shop) s on day d are

    λ = base · level_s(d) · popularity_i · channel_weight(category) · lifecycle_i(d)
          · weekly(channel, d) · season(category, d) · events(channel, category, d)
          · (list_price_i(d) / launch_price_i)^(−ε_i) · (1 − discount)^(−ε_i) · promo_uplift

where level_s(d) carries the site's potential, the store's format, its ramp-up after opening and
the cannibalisation by the brand's other open stores nearby (online: the city's online consumer
mass times the platform's share). Purchase events are Poisson(λ · shock / mean quantity) with a
gamma store-day shock; each event gets a buyer drawn by true affinity, then lines are grouped
into orders. The functions here are pure: a context and a random generator in, frames out.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from lake.generate.world import (
    CATEGORIES, CATEGORY_NAMES, CHANNEL_PREFS, CHANNEL_WEIGHT, PLATFORM_PHONE_RATE, World,
    _haversine_km, affinity,
)

QUANTITY_P = np.array([0.85, 0.12, 0.03])  # 1, 2 or 3 units on a line
MEAN_QUANTITY = float(np.dot(QUANTITY_P, [1, 2, 3]))
REFUND_RATE = {"online": 0.08, "offline": 0.02}
PROMO_UPLIFT = 1.15  # display and marketing effect on top of the price effect
STORE_DAY_SHOCK_SHAPE = 25.0  # gamma shape: store-day noise with a 20 % coefficient of variation
CARD_SCAN_RATE = 0.8  # members scan their loyalty card on 80 % of store visits
GUEST_CHECKOUT_RATE = 0.04

WEEKLY = {  # Monday..Sunday
    "offline": np.array([0.85, 0.85, 0.9, 0.95, 1.05, 1.3, 1.25]),
    "online": np.array([1.0, 0.97, 0.97, 0.99, 1.02, 1.02, 1.03]),
}
WEEKLY = {k: v / v.mean() for k, v in WEEKLY.items()}
EVENT_EFFECT = {  # (event, phase) -> (online, offline) multiplier on traffic
    ("618", "presale"): (1.25, 1.0), ("618", "peak"): (2.5, 1.1), ("618", "post"): (0.7, 1.0),
    ("double11", "presale"): (1.2, 1.0), ("double11", "peak"): (3.0, 1.1), ("double11", "post"): (0.7, 1.0),
    ("double12", "peak"): (1.6, 1.0), ("womens_day", "peak"): (1.3, 1.1),
    ("cny", "presale"): (1.1, 1.4), ("cny", "closure"): (0.35, 0.0), ("cny", "post"): (0.6, 0.6),
    ("golden_week", "holiday"): (0.9, 1.5), ("mid_autumn", "holiday"): (1.0, 1.2),
}
GIFT_EVENTS = ("valentines", "qixi", "womens_day")
ONLINE_HOUR_P = np.array([2, 1, .5, .3, .2, .3, .6, 1.2, 2, 2.5, 3, 3.5, 4, 3.8, 3.5, 3.5, 3.8, 4, 4.5, 5.5, 7, 8, 7, 4.5])
OFFLINE_HOUR_P = np.array([0] * 10 + [3, 4, 6, 7, 7, 7.5, 7.5, 7, 7.5, 8, 6, 3.5] + [0, 0])


@dataclass
class CityContext:
    """Everything a chunk task needs about one city. Built on the driver, shipped once per city."""

    city: str
    city_index: int
    base_rate: float
    online_level: float  # the city's online demand mass, in offline-store units
    stores: pd.DataFrame  # offline stores of the city, then the online shops
    products: pd.DataFrame
    prices: pd.DataFrame
    promotions: pd.DataFrame
    assortment: pd.DataFrame
    calendar: pd.DataFrame
    consumers: pd.DataFrame  # the city's consumers (ids, member flag, accounts, home cell)
    buyer_cdf: dict[str, np.ndarray]  # channel -> (n_consumers, N_COMBOS) cumulative weights
    end: dt.date


def city_contexts(world: World) -> list[CityContext]:
    """One context per city, with the buyer-choice tables precomputed."""
    stores = world.stores
    online_shops = stores[stores["channel"] == "online"]
    consumers = world.consumers
    aff = affinity(consumers).astype(np.float32)
    pref = consumers["channel_pref"].map({p: i for i, p in enumerate(CHANNEL_PREFS)}).to_numpy()
    mass = {ch: consumers["activity"].to_numpy() * CHANNEL_WEIGHT[pref, k] for k, ch in enumerate(("online", "offline"))}
    n_offline = int((stores["channel"] == "offline").sum())
    total_online = mass["online"].sum()
    contexts = []
    for k, city in enumerate(world.cities["city"]):
        in_city = (consumers["city"] == city).to_numpy()
        city_stores = pd.concat([stores[(stores["channel"] == "offline") & (stores["city"] == city)], online_shops])
        cdf = {ch: np.cumsum(aff[in_city] * mass[ch][in_city, None].astype(np.float32), axis=0) for ch in mass}
        contexts.append(CityContext(
            city=city, city_index=k, base_rate=world.base_rate,
            online_level=n_offline * mass["online"][in_city].sum() / total_online,
            stores=city_stores.reset_index(drop=True), products=world.products, prices=world.prices,
            promotions=world.promotions,
            assortment=world.assortment[world.assortment["store_id"].isin(city_stores["store_id"])],
            calendar=world.calendar,
            consumers=consumers.loc[in_city].reset_index(drop=True), buyer_cdf=cdf, end=world.end,
        ))
    return contexts


# --- expected demand ----------------------------------------------------------------------------

def _as_date(v) -> dt.date | None:
    return v if isinstance(v, dt.date) else None


def _interval_mask(days: np.ndarray, first: list, last: list) -> np.ndarray:
    """(n, n_days) mask of first[i] <= day <= last[i]; None means unbounded."""
    lo = np.array([np.datetime64(f, "D") if f else np.datetime64("1900-01-01") for f in first])
    hi = np.array([np.datetime64(l, "D") if l else np.datetime64("2999-12-31") for l in last])
    return (days[None, :] >= lo[:, None]) & (days[None, :] <= hi[:, None])


def _event_multipliers(calendar: pd.DataFrame, days: np.ndarray) -> dict[str, np.ndarray]:
    """(n_categories, n_days) multipliers per channel from retail events and their side effects."""
    out = {ch: np.ones((len(CATEGORY_NAMES), len(days))) for ch in ("online", "offline")}
    gift = np.array([CATEGORIES[c].gift for c in CATEGORY_NAMES])
    index = {d: i for i, d in enumerate(days.astype("datetime64[D]").tolist())}
    for row in calendar.itertuples():
        i = index.get(row.date)
        if i is None:
            continue
        online, offline = EVENT_EFFECT.get((row.event, row.phase), (1.0, 1.0))
        out["online"][:, i] *= online
        out["offline"][:, i] *= offline
        if row.event in GIFT_EVENTS:
            out["online"][:, i] *= 1 + gift
            out["offline"][:, i] *= 1 + gift
        if row.phase == "peak" and (row.date.month, row.date.day) in ((6, 18), (11, 11)):
            out["online"][:, i] *= 1.8  # the day itself
    for i, day in enumerate(days.astype("datetime64[D]").tolist()):
        # demand pulled forward into presales leaves a dip before them
        if (day.month == 5 and 16 <= day.day <= 24) or (day.month == 10 and 15 <= day.day <= 23):
            out["online"][:, i] *= 0.85
    cny_days = calendar[(calendar["event"] == "cny") & (calendar["phase"] == "closure")]["date"]
    for first in cny_days.groupby(pd.to_datetime(cny_days).dt.year).min():
        for back in range(1, 7):  # couriers stop taking parcels before the holiday
            i = index.get(first - dt.timedelta(days=back))
            if i is not None:
                out["online"][:, i] *= 0.6
    return out


def _discounts(promotions: pd.DataFrame, products: pd.DataFrame, store: pd.Series,
               days: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Deepest discount on offer and its promo id, (n_products, n_days), for one store."""
    disc = np.zeros((len(products), len(days)))
    promo = np.full((len(products), len(days)), None, dtype=object)
    cats = products["category"].to_numpy()
    skus = products["sku_id"].to_numpy()
    for p in promotions.itertuples():
        if p.channel not in ("all", store["channel"]):
            continue
        if isinstance(p.platform, str) and p.platform != store.get("platform"):
            continue
        day_mask = (days >= np.datetime64(p.start_date, "D")) & (days <= np.datetime64(p.end_date, "D"))
        if not day_mask.any():
            continue
        sku_mask = np.ones(len(products), bool)
        if isinstance(p.category, str):
            sku_mask &= cats == p.category
        if isinstance(getattr(p, "sku_id", None), str):
            sku_mask &= skus == p.sku_id
        cell = sku_mask[:, None] & day_mask[None, :] & (p.discount_pct > disc)
        disc[cell] = p.discount_pct
        promo[cell] = p.promo_id
    return disc, promo


def _list_prices(prices: pd.DataFrame, products: pd.DataFrame, days: np.ndarray) -> np.ndarray:
    """(n_products, n_days) list price on each day."""
    out = np.tile(products["list_price"].to_numpy()[:, None], (1, len(days)))
    row_of = {s: i for i, s in enumerate(products["sku_id"])}
    for p in prices.sort_values("valid_from").itertuples():
        mask = _interval_mask(days, [p.valid_from], [_as_date(p.valid_to)])[0]
        out[row_of[p.sku_id], mask] = p.list_price
    return out


@dataclass
class ExpectedDemand:
    """Expected units for the ranged series of one city over some days, with what priced them."""

    series: pd.DataFrame  # store_id, sku_id, channel, platform, product row, store row
    days: np.ndarray  # datetime64[D]
    expected: np.ndarray  # (n_series, n_days) expected units
    list_price: np.ndarray  # (n_series, n_days)
    discount: np.ndarray
    promo_id: np.ndarray


def expected_demand(ctx: CityContext, days: np.ndarray, base_rate: float | None = None) -> ExpectedDemand:
    """λ for every ranged store × SKU of the city on the given days (datetime64[D] array)."""
    base = ctx.base_rate if base_rate is None else base_rate
    products = ctx.products
    stores = ctx.stores
    prod_row = {s: i for i, s in enumerate(products["sku_id"])}
    store_row = {s: i for i, s in enumerate(stores["store_id"])}
    series = ctx.assortment.copy()
    series["p"] = series["sku_id"].map(prod_row)
    series["s"] = series["store_id"].map(store_row)
    series = series.sort_values(["s", "p"], ignore_index=True)
    pr, sr = series["p"].to_numpy(), series["s"].to_numpy()

    ranged = _interval_mask(days, [_as_date(v) for v in series["valid_from"]], [_as_date(v) for v in series["valid_to"]])
    launched = _interval_mask(days, [_as_date(v) for v in products["launch_date"]], [_as_date(v) for v in products["end_date"]])
    age = (days[None, :] - np.array([np.datetime64(v, "D") for v in products["launch_date"]])[:, None]).astype(int)
    lifecycle = np.where(age >= 0, np.minimum(1.0, (age + 1) / 10.0) * (0.35 + 0.65 * np.exp(-np.maximum(age, 0) / 240.0)), 0.0)

    doy = (days - days.astype("datetime64[Y]")).astype(int) + 1
    dow = (days.astype("datetime64[D]").view("int64") + 3) % 7  # 1970-01-01 was a Thursday
    cat_idx = products["category"].map({c: i for i, c in enumerate(CATEGORY_NAMES)}).to_numpy()
    season = np.array([1 + CATEGORIES[c].season_amplitude * np.cos(2 * np.pi * (doy - CATEGORIES[c].season_peak_doy) / 365.25)
                       for c in CATEGORY_NAMES])  # (categories, days)
    events = _event_multipliers(ctx.calendar, days)
    online_share = np.array([CATEGORIES[c].online_share for c in CATEGORY_NAMES])
    list_price = _list_prices(ctx.prices, products, days)
    price_effect = (list_price / products["list_price"].to_numpy()[:, None]) ** (-products["true_elasticity"].to_numpy()[:, None])

    level = _store_levels(ctx, days)  # (stores, days)
    n_series = len(series)
    expected = np.zeros((n_series, len(days)))
    disc_all = np.zeros((n_series, len(days)))
    promo_all = np.full((n_series, len(days)), None, dtype=object)
    for s_idx, store in stores.iterrows():
        rows = np.flatnonzero(sr == s_idx)
        if rows.size == 0:
            continue
        ch = store["channel"]
        p = pr[rows]
        disc, promo = _discounts(ctx.promotions, products, store, days)
        weight = 2 * (online_share if ch == "online" else 1 - online_share)[cat_idx[p]]
        lam = (base * level[s_idx][None, :] * products["true_popularity"].to_numpy()[p, None] * weight[:, None]
               * lifecycle[p] * launched[p] * ranged[rows] * WEEKLY[ch][dow][None, :] * season[cat_idx[p]]
               * events[ch][cat_idx[p]] * price_effect[p]
               * (1 - disc[p]) ** (-products["true_elasticity"].to_numpy()[p, None])
               * np.where(disc[p] > 0, PROMO_UPLIFT, 1.0))
        expected[rows] = lam
        disc_all[rows] = disc[p]
        promo_all[rows] = promo[p]
    series["channel"] = stores["channel"].to_numpy()[sr]
    series["platform"] = stores["platform"].to_numpy()[sr] if "platform" in stores else None
    return ExpectedDemand(series, days, expected, list_price[pr], disc_all, promo_all)


def _store_levels(ctx: CityContext, days: np.ndarray) -> np.ndarray:
    """(n_stores, n_days): site × format level, ramp-up, cannibalisation and open days."""
    stores = ctx.stores
    n = len(stores)
    level = np.zeros((n, len(days)))
    offline = (stores["channel"] == "offline").to_numpy()
    open_mask = _interval_mask(days, [_as_date(v) for v in stores["open_date"]],
                               [_as_date(v) for v in stores.get("close_date", pd.Series([None] * n))])
    if offline.any():
        off = stores[offline]
        lat, lon = off["lat"].to_numpy(float), off["lon"].to_numpy(float)
        dist = _haversine_km(lat[:, None], lon[:, None], lat[None, :], lon[None, :])
        pull = np.exp(-dist / 1.2)
        np.fill_diagonal(pull, 0.0)
        om = open_mask[offline].astype(float)
        cannibalisation = 1.0 / (1.0 + 0.5 * pull @ om)  # (stores, days)
        opened = np.array([np.datetime64(v, "D") for v in off["open_date"]])
        age = (days[None, :] - opened[:, None]).astype(int)
        ramp = np.where(age >= 0, 1 - 0.6 * np.exp(-np.maximum(age, 0) / 75.0), 0.0)
        level[offline] = off["true_level"].to_numpy()[:, None] * ramp * cannibalisation * om
    level[~offline] = stores.loc[~offline, "true_level"].to_numpy()[:, None] * ctx.online_level
    return level


# --- sampling -----------------------------------------------------------------------------------

@dataclass
class ChunkSales:
    online_orders: pd.DataFrame
    pos_transactions: pd.DataFrame
    expected: pd.DataFrame  # dt, store_id, sku_id, city, expected_units


def simulate_chunk(ctx: CityContext, days: np.ndarray, rng: np.random.Generator) -> ChunkSales:
    """Draw the sales lines of one city for `days` (consecutive datetime64[D])."""
    ed = expected_demand(ctx, days)
    series = ed.series
    # store-day shocks: weather, staffing, a mall event …
    shock = rng.gamma(STORE_DAY_SHOCK_SHAPE, 1 / STORE_DAY_SHOCK_SHAPE, size=(len(ctx.stores), len(days)))
    rate = ed.expected * shock[series["s"].to_numpy()] / MEAN_QUANTITY
    events = rng.poisson(rate)
    s_idx, d_idx = np.nonzero(events)
    counts = events[s_idx, d_idx]
    s_idx, d_idx = np.repeat(s_idx, counts), np.repeat(d_idx, counts)
    n = len(s_idx)
    products = ctx.products
    p_idx = series["p"].to_numpy()[s_idx]
    lines = pd.DataFrame({
        "store_id": series["store_id"].to_numpy()[s_idx], "channel": series["channel"].to_numpy()[s_idx],
        "platform": series["platform"].to_numpy()[s_idx], "sku_id": products["sku_id"].to_numpy()[p_idx],
        "day": days[d_idx], "quantity": rng.choice([1, 2, 3], size=n, p=QUANTITY_P).astype("int32"),
        "list_price": ed.list_price[s_idx, d_idx], "discount": ed.discount[s_idx, d_idx],
        "promo_id": ed.promo_id[s_idx, d_idx],
    })
    lines["unit_price"] = np.round(lines["list_price"] * (1 - lines["discount"]), 2)
    lines["discount_amount"] = np.round((lines["list_price"] - lines["unit_price"]) * lines["quantity"], 2)
    lines["consumer"] = _draw_buyers(ctx, products["combo"].to_numpy()[p_idx], lines["channel"].to_numpy(), rng)

    online = _online_orders(ctx, lines[lines["channel"] == "online"].reset_index(drop=True), rng)
    pos = _pos_transactions(ctx, lines[lines["channel"] == "offline"].reset_index(drop=True), rng)
    nz = np.nonzero(ed.expected > 0)
    expected = pd.DataFrame({
        "dt": days[nz[1]].astype("datetime64[D]").astype(object), "store_id": series["store_id"].to_numpy()[nz[0]],
        "sku_id": products["sku_id"].to_numpy()[series["p"].to_numpy()[nz[0]]],
        "city": ctx.city, "expected_units": ed.expected[nz].astype(np.float32),
    })
    return ChunkSales(online, pos, expected)


def _draw_buyers(ctx: CityContext, combos: np.ndarray, channels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Index into ctx.consumers of each event's buyer, drawn ∝ activity × channel × affinity."""
    buyers = np.zeros(len(combos), dtype=np.int64)
    for ch in ("online", "offline"):
        for combo in np.unique(combos[channels == ch]):
            rows = np.flatnonzero((channels == ch) & (combos == combo))
            cdf = ctx.buyer_cdf[ch][:, combo]
            buyers[rows] = np.minimum(np.searchsorted(cdf, rng.random(rows.size) * cdf[-1], side="right"), len(cdf) - 1)
    return buyers


def _timestamps(days: np.ndarray, hour_p: np.ndarray, rng: np.random.Generator) -> pd.Series:
    hours = rng.choice(24, size=len(days), p=hour_p / hour_p.sum())
    seconds = hours * 3600 + rng.integers(0, 3600, size=len(days))
    ts = pd.to_datetime(days.astype("datetime64[s]")) + pd.to_timedelta(seconds, unit="s")
    return pd.Series(ts).dt.tz_localize("Asia/Shanghai")


def _refunds(lines: pd.DataFrame, rate: float, max_delay: int, ts_col: str, end: dt.date,
             rng: np.random.Generator) -> pd.DataFrame:
    """Refund rows for a share of lines, a few days later, inside the lake's period."""
    chosen = lines[rng.random(len(lines)) < rate].copy()
    delay = pd.to_timedelta(rng.integers(1, max_delay + 1, size=len(chosen)) * 86_400
                            + rng.integers(-3600 * 3, 3600 * 3, size=len(chosen)), unit="s")
    chosen[ts_col] = chosen[ts_col] + delay
    chosen = chosen[chosen[ts_col].dt.date <= end]
    chosen["is_refund"] = True
    chosen["quantity"] = -chosen["quantity"]
    chosen["discount_amount"] = -chosen["discount_amount"]
    return chosen


def _online_orders(ctx: CityContext, lines: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    consumers = ctx.consumers.iloc[lines["consumer"].to_numpy()]
    lines["order_ts"] = _timestamps(lines["day"].to_numpy(), ONLINE_HOUR_P, rng).array  # tz-aware, not objects
    # one order per buyer, shop and day
    key = pd.DataFrame({"store_id": lines["store_id"], "day": lines["day"], "consumer": lines["consumer"]})
    order_no = key.groupby(["store_id", "day", "consumer"], sort=True).ngroup().to_numpy()
    n_orders = order_no.max() + 1 if len(order_no) else 0
    shuffled = rng.permutation(n_orders)
    prefix = pc.utf8_upper(pc.utf8_slice_codeunits(pa.array(lines["platform"].to_numpy(dtype=object)), 0, 2))
    lines["order_id"] = _ids(prefix, _compact_days(lines["day"]), f"{ctx.city_index:02d}",
                             _padded(shuffled[order_no], 7))
    first_ts = lines.groupby("order_id")["order_ts"].transform("min")
    lines["order_ts"] = first_ts  # all lines of an order share its time
    lines["line_no"] = (lines.groupby("order_id").cumcount() + 1).astype("int32")
    guest = rng.random(len(lines)) < GUEST_CHECKOUT_RATE
    platforms = lines["platform"].to_numpy()
    buyer = np.empty(len(lines), dtype=object)
    for platform in np.unique(platforms):  # each line's account on the platform it bought on
        on_platform = platforms == platform
        buyer[on_platform] = consumers[f"{platform}_id"].to_numpy()[on_platform]
    lines["buyer_id"] = np.where(guest, None, buyer)
    phone_rate = lines["platform"].map(PLATFORM_PHONE_RATE).to_numpy()
    lines["phone_hash"] = np.where(rng.random(len(lines)) < phone_rate, consumers["phone_hash"].to_numpy(), None)
    lines["delivery_cell"] = consumers["home_cell"].to_numpy()
    lines["is_refund"] = False
    out = pd.concat([lines, _refunds(lines, REFUND_RATE["online"], 14, "order_ts", ctx.end, rng)], ignore_index=True)
    out["dt"] = out["order_ts"].dt.date
    cols = ["order_id", "line_no", "is_refund", "order_ts", "store_id", "sku_id", "quantity", "unit_price",
            "buyer_id", "phone_hash", "list_price", "discount_amount", "promo_id", "delivery_cell", "dt"]
    return out[cols].sort_values(["order_ts", "order_id", "line_no", "is_refund"], ignore_index=True)


def _compact_days(days: pd.Series) -> pa.Array:
    """YYYYMMDD strings of datetime64 days."""
    return pc.strftime(pa.array(days.to_numpy().astype("datetime64[s]")), format="%Y%m%d")


def _padded(numbers: np.ndarray, width: int) -> pa.Array:
    return pc.utf8_lpad(pc.cast(pa.array(numbers.astype(np.int64)), pa.string()), width, "0")


def _ids(*parts: pa.Array | str) -> np.ndarray:
    """Row ids joined from string columns and constants, vectorised (a Python loop over a
    chunk's lines cost most of its id-building time)."""
    return pc.binary_join_element_wise(*parts, "").to_numpy(zero_copy_only=False)


def _pos_transactions(ctx: CityContext, lines: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    consumers = ctx.consumers.iloc[lines["consumer"].to_numpy()]
    lines["txn_ts"] = _timestamps(lines["day"].to_numpy(), OFFLINE_HOUR_P, rng).array
    scanned = consumers["is_member"].to_numpy() & (rng.random(len(lines)) < CARD_SCAN_RATE)
    lines["member_card_id"] = np.where(scanned, consumers["pos_card_id"].to_numpy(), None)
    # a member's purchases in one store on one day form one basket; anonymous ones stand alone
    basket = np.where(scanned, lines["consumer"].to_numpy(), -1 - np.arange(len(lines)))
    key = pd.DataFrame({"store_id": lines["store_id"], "day": lines["day"], "basket": basket})
    txn_no = key.groupby(["store_id", "day", "basket"], sort=True).ngroup().to_numpy()
    lines["txn_id"] = _ids(pa.array(lines["store_id"].to_numpy(dtype=object)), "-", _compact_days(lines["day"]), "-",
                           _padded(txn_no, 6))
    lines["txn_ts"] = lines.groupby("txn_id")["txn_ts"].transform("min")
    lines["line_no"] = (lines.groupby("txn_id").cumcount() + 1).astype("int32")
    lines["is_refund"] = False
    refunds = _refunds(lines, REFUND_RATE["offline"], 7, "txn_ts", ctx.end, rng)
    refunds = _onto_trading_days(refunds, ctx)
    out = pd.concat([lines, refunds], ignore_index=True)
    out["dt"] = out["txn_ts"].dt.date
    cols = ["txn_id", "line_no", "is_refund", "txn_ts", "store_id", "sku_id", "quantity", "unit_price",
            "member_card_id", "list_price", "discount_amount", "promo_id", "dt"]
    return out[cols].sort_values(["txn_ts", "txn_id", "line_no", "is_refund"], ignore_index=True)


def calibrate_base_rate(contexts: list[CityContext], days: np.ndarray, target_lines: int) -> float:
    """The base rate that makes the expected number of lines (sales + refunds) over `days`
    equal `target_lines`, estimated on an evenly spread sample of days (every weekday included)."""
    step = next((s for s in (3, 5, 11, 13, 17, 19, 23, 29) if len(days) / s <= 60), 31)
    sample = days[::step]
    units = sum(float(expected_demand(ctx, sample, base_rate=1.0).expected.sum()) for ctx in contexts)
    units *= len(days) / len(sample)
    lines_per_unit = (1 + 0.05) / MEAN_QUANTITY  # about 5 % of lines get a refund line
    if units <= 0:
        raise ValueError("the generated world has no demand at all; check the scale's dates")
    return target_lines / (units * lines_per_unit)


def _onto_trading_days(refunds: pd.DataFrame, ctx: CityContext) -> pd.DataFrame:
    """Returns happen only when the store trades: a refund due on a closure day moves to the
    next open day; one due after the store closed for good is dropped."""
    closed = set(ctx.calendar.loc[ctx.calendar["phase"] == "closure", "date"])
    shift = np.zeros(len(refunds), dtype=int)
    days = refunds["txn_ts"].dt.date.to_numpy()
    for i, day in enumerate(days):
        while day + dt.timedelta(days=int(shift[i])) in closed:
            shift[i] += 1
    refunds = refunds.assign(txn_ts=refunds["txn_ts"] + pd.to_timedelta(shift, unit="D"))
    close = ctx.stores.set_index("store_id")["close_date"] if "close_date" in ctx.stores else None
    if close is not None:
        last = refunds["store_id"].map(close)
        keep = [not isinstance(c, dt.date) or d <= c for d, c in zip(refunds["txn_ts"].dt.date, last)]
        refunds = refunds[keep]
    return refunds[refunds["txn_ts"].dt.date <= ctx.end]
