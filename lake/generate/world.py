"""The synthetic brand's world: cities, candidate sites, stores, catalogue, consumers and the
hidden parameters that drive their behaviour.

Everything here is drawn once, on the driver, from one seed. The per-day sales are simulated in
`lake.generate.sales` from this world, chunk by chunk. Hidden parameters (site potential, SKU
popularity and elasticity, consumer affinities) are written to `truth/` and never to `raw/`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import h3
import numpy as np
import pandas as pd

from lake.calendar import retail_calendar
from lake.contract import ONLINE_PLATFORMS
from lake.generate.scales import Scale

H3_RES = 8

# name, tier, lat, lon, relative size
CITIES = [
    ("Shanghai", 1, 31.2304, 121.4737, 1.00), ("Beijing", 1, 39.9042, 116.4074, 0.95),
    ("Hangzhou", 2, 30.2741, 120.1551, 0.55), ("Chengdu", 2, 30.5728, 104.0668, 0.60),
    ("Shenzhen", 1, 22.5431, 114.0579, 0.80), ("Guangzhou", 1, 23.1291, 113.2644, 0.80),
    ("Wuhan", 2, 30.5928, 114.3055, 0.55), ("Nanjing", 2, 32.0603, 118.7969, 0.50),
    ("Xi'an", 2, 34.3416, 108.9398, 0.45), ("Suzhou", 2, 31.2989, 120.5853, 0.45),
    ("Changsha", 2, 28.2282, 112.9388, 0.40), ("Chongqing", 2, 29.5630, 106.5516, 0.55),
    ("Tianjin", 2, 39.3434, 117.3616, 0.50), ("Qingdao", 2, 36.0671, 120.3826, 0.40),
    ("Zhengzhou", 2, 34.7466, 113.6254, 0.40), ("Kunming", 3, 25.0389, 102.7183, 0.30),
    ("Xiamen", 3, 24.4798, 118.0894, 0.30), ("Hefei", 3, 31.8206, 117.2272, 0.35),
    ("Fuzhou", 3, 26.0745, 119.2965, 0.30), ("Ningbo", 3, 29.8683, 121.5440, 0.35),
    ("Jinan", 3, 36.6512, 117.1201, 0.30), ("Shenyang", 3, 41.8057, 123.4315, 0.35),
    ("Dalian", 3, 38.9140, 121.6147, 0.30), ("Harbin", 3, 45.8038, 126.5350, 0.30),
    ("Nanning", 3, 22.8170, 108.3665, 0.25), ("Guiyang", 3, 26.6470, 106.6302, 0.25),
    ("Wuxi", 3, 31.4912, 120.3119, 0.30), ("Foshan", 3, 23.0215, 113.1214, 0.30),
    ("Dongguan", 3, 23.0207, 113.7518, 0.30), ("Shijiazhuang", 3, 38.0428, 114.5149, 0.25),
]


@dataclass(frozen=True)
class CategorySpec:
    subcategories: tuple[str, ...]
    price_range: tuple[float, float]  # list prices, CNY
    elasticity: float  # mean own-price elasticity (positive number)
    online_share: float
    season_peak_doy: int  # day of year of the seasonal peak
    season_amplitude: float
    gift: float  # extra demand around Valentine's, 3.8 and Qixi


CATEGORIES: dict[str, CategorySpec] = {
    "tops": CategorySpec(("tshirt", "shirt", "knitwear"), (99, 399), 1.6, 0.45, 200, 0.35, 0.0),
    "bottoms": CategorySpec(("jeans", "trousers", "skirt"), (149, 499), 1.4, 0.40, 180, 0.10, 0.0),
    "outerwear": CategorySpec(("jacket", "coat", "down"), (399, 1599), 1.2, 0.35, 15, 0.70, 0.0),
    "shoes": CategorySpec(("sneakers", "boots", "loafers"), (299, 999), 1.3, 0.40, 100, 0.20, 0.0),
    "bags": CategorySpec(("tote", "crossbody", "wallet"), (199, 1299), 1.0, 0.50, 0, 0.0, 0.9),
    "beauty": CategorySpec(("skincare", "lipstick", "fragrance"), (89, 599), 1.8, 0.60, 0, 0.05, 0.7),
    "accessories": CategorySpec(("scarf", "hat", "jewelry"), (59, 399), 1.1, 0.45, 350, 0.40, 0.6),
}
CATEGORY_NAMES = tuple(CATEGORIES)
STYLES = ("classic", "trend", "sport")
PRICE_BANDS = ("entry", "core", "premium")
AGE_BANDS = ("18-24", "25-34", "35-44", "45+")
SENSITIVITIES = ("low", "mid", "high")
N_COMBOS = len(CATEGORY_NAMES) * len(PRICE_BANDS) * len(STYLES)

# Affinity of each age band for each category (rows: AGE_BANDS, columns: CATEGORY_NAMES).
AGE_CATEGORY_PREF = np.array([
    [1.4, 1.1, 0.6, 1.3, 0.8, 1.6, 1.2],
    [1.2, 1.1, 0.9, 1.1, 1.2, 1.3, 1.0],
    [0.9, 1.0, 1.2, 0.9, 1.3, 0.9, 0.9],
    [0.7, 0.9, 1.4, 0.8, 1.1, 0.6, 0.9],
])
# Affinity of each price sensitivity for each price band (rows: SENSITIVITIES, cols: PRICE_BANDS).
SENSITIVITY_BAND_PREF = np.array([[0.6, 1.0, 1.6], [1.0, 1.1, 0.8], [1.6, 1.0, 0.4]])
FAVOURITE_CATEGORY_BOOST = 6.0
FAVOURITE_STYLE_BOOST = 2.5

PLATFORM_SHARE = {"tmall": 0.40, "jd": 0.20, "douyin": 0.25, "miniprogram": 0.15}
PLATFORM_LINK_RATE = {"tmall": 0.70, "jd": 0.60, "douyin": 0.50, "miniprogram": 0.95}
PLATFORM_PHONE_RATE = {"tmall": 0.30, "jd": 0.40, "douyin": 0.50, "miniprogram": 0.90}
FORMAT_FACTOR = {"flagship": 2.2, "mall": 1.0, "street": 0.7, "outlet": 0.6}
FORMAT_RANGING = {"flagship": 0.92, "mall": 0.65, "street": 0.5, "outlet": 0.45}
MEMBER_SHARE = 0.6
CHANNEL_PREFS = ("online", "offline", "omni")
CHANNEL_PREF_P = (0.35, 0.25, 0.40)
# weight of a consumer in each channel (rows: CHANNEL_PREFS, cols: online, offline)
CHANNEL_WEIGHT = np.array([[1.0, 0.05], [0.05, 1.0], [0.6, 0.6]])


@dataclass
class World:
    """The drawn world. Frames hold contract columns plus hidden ones prefixed `true_`."""

    scale: Scale
    seed: int
    days: pd.DatetimeIndex
    cities: pd.DataFrame
    sites: pd.DataFrame
    stores: pd.DataFrame
    products: pd.DataFrame
    prices: pd.DataFrame
    promotions: pd.DataFrame
    assortment: pd.DataFrame
    calendar: pd.DataFrame
    consumers: pd.DataFrame
    identities: pd.DataFrame
    base_rate: float = 1.0  # expected units per unit of store level × SKU popularity per day

    @property
    def start(self) -> dt.date:
        return self.days[0].date()

    @property
    def end(self) -> dt.date:
        return self.days[-1].date()


def _round_price(x: np.ndarray) -> np.ndarray:
    """Retail prices end in 9: 187 → 189, 1012 → 1019."""
    return np.maximum(9.0, np.floor(x / 10.0) * 10.0 + 9.0)


def _ids(rng: np.random.Generator, prefix: str, n: int, digits: int) -> np.ndarray:
    """n unique, non-contiguous ids like 'TP-204817'."""
    numbers = rng.choice(10**digits - 10 ** (digits - 1), size=n, replace=False) + 10 ** (digits - 1)
    return np.array([f"{prefix}{v}" for v in numbers], dtype=object)


def _hex_ids(rng: np.random.Generator, prefix: str, n: int, bits: int = 48) -> pd.Series:
    """n random hex ids of `bits` bits (a multiple of 32) with a prefix, e.g. 'tm_3fa9c2…'."""
    words = rng.integers(0, 2**32, size=(n, bits // 32), dtype=np.uint64).astype(">u4")
    digits = words.tobytes().hex()  # one big hex string, `bits // 4` characters per id
    width = bits // 4
    return pd.Series([prefix + digits[i * width:(i + 1) * width] for i in range(n)], dtype="str")


def build_cities(scale: Scale, rng: np.random.Generator) -> pd.DataFrame:
    rows = CITIES[: scale.cities]
    frame = pd.DataFrame(rows, columns=["city", "tier", "lat", "lon", "size"])
    frame["code"] = city_codes(frame["city"])
    return frame


def city_codes(cities) -> list[str]:
    """Three-letter codes that prefix store ids, unique across cities: the first three letters,
    else (Shenzhen / Shenyang) the first letter and the last two."""
    codes: list[str] = []
    for city in cities:
        name = city.replace("'", "").upper()
        code = name[:3]
        if code in codes:
            code = name[0] + name[-2:]
        if code in codes:
            raise ValueError(f"no unique store-id code for {city}")
        codes.append(code)
    return codes


def build_sites(cities: pd.DataFrame, scale: Scale, rng: np.random.Generator) -> pd.DataFrame:
    """Candidate cells around each city centre, with observable area features and the hidden
    `true_segment_match` (how well the locals fit the brand) and `true_potential` (annual revenue
    a standard mall store would make there, CNY)."""
    frames = []
    for city in cities.itertuples():
        centre = h3.latlng_to_cell(city.lat, city.lon, H3_RES)
        cells = sorted(h3.grid_disk(centre, scale.site_ring))
        latlon = np.array([h3.cell_to_latlng(c) for c in cells])
        dist_km = _haversine_km(city.lat, city.lon, latlon[:, 0], latlon[:, 1])
        n = len(cells)
        # one to three sub-centres (business districts) besides the old town
        hubs = latlon[rng.choice(n, size=rng.integers(1, 4), replace=False)]
        hub_km = np.min([_haversine_km(h[0], h[1], latlon[:, 0], latlon[:, 1]) for h in hubs], axis=0)
        density = np.exp(-dist_km / 4.0) + 0.6 * np.exp(-hub_km / 1.5)
        population = 18_000 * city.size * density * rng.lognormal(0, 0.35, n)
        business = np.exp(-dist_km / 2.0) + 1.2 * np.exp(-hub_km / 1.0)
        daytime = 25_000 * city.size * business * rng.lognormal(0, 0.45, n)
        footfall = (0.4 * population + 0.6 * daytime) * rng.lognormal(0, 0.25, n)
        footfall_index = footfall / np.median(footfall)
        competitors = rng.poisson(1.5 * footfall_index**0.8)
        complementary = rng.poisson(4.0 * footfall_index**0.9)
        segment_match = np.clip(rng.beta(2.5, 2.5, n) + 0.25 * np.exp(-hub_km / 2.0), 0.02, 1.2)
        income_index = np.exp(0.8 * (segment_match - segment_match.mean()) + rng.normal(0, 0.3, n))
        rent = (60 + 140 * footfall_index**0.7) * (1.6 if city.tier == 1 else 1.0 if city.tier == 2 else 0.7)
        rent *= rng.lognormal(0, 0.15, n)
        traffic = (0.35 * population + 0.65 * daytime) / 10_000
        quality = rng.lognormal(0, 0.2, n)  # what no feature shows
        potential = (2.2e6 * traffic**0.6 * (1 + 0.05 * complementary) / (1 + 0.18 * competitors)
                     * (0.35 + segment_match) * quality * (1.25 if city.tier == 1 else 1.0))
        frames.append(pd.DataFrame({
            "site_id": cells, "city": city.city, "lat": latlon[:, 0], "lon": latlon[:, 1],
            "population": population.round(0), "daytime_population": daytime.round(0),
            "footfall_index": footfall_index.round(3), "competitors": competitors.astype(float),
            "complementary_shops": complementary.astype(float), "rent_per_sqm_month": rent.round(1),
            "income_index": income_index.round(3),
            "true_segment_match": segment_match, "true_potential": potential,
        }))
    return pd.concat(frames, ignore_index=True)


def _haversine_km(lat1, lon1, lat2, lon2) -> np.ndarray:
    lat1, lon1, lat2, lon2 = map(np.radians, (lat1, lon1, lat2, lon2))
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371.0 * np.arcsin(np.sqrt(a))


def build_stores(cities: pd.DataFrame, sites: pd.DataFrame, scale: Scale, start: dt.date,
                 end: dt.date, rng: np.random.Generator) -> pd.DataFrame:
    """Offline stores at chosen sites (better sites are likelier, as a brand chooses them, but
    not perfectly) plus one online shop per platform."""
    rows = []
    period = (end - start).days
    for city in cities.itertuples():
        city_sites = sites[sites["city"] == city.city]
        weight = city_sites["true_potential"].to_numpy() ** 0.8
        chosen = rng.choice(len(city_sites), size=min(scale.stores_per_city, len(city_sites)),
                            replace=False, p=weight / weight.sum())
        ids = _ids(rng, f"{city.code}-", len(chosen), 3)
        for k, (idx, store_id) in enumerate(zip(chosen, ids)):
            site = city_sites.iloc[idx]
            if k == 0:
                fmt = "flagship"
            else:
                fmt = rng.choice(["mall", "street", "outlet"], p=[0.6, 0.28, 0.12])
            # 70 % trade before the lake starts; the rest open during it and ramp up
            if rng.random() < 0.7 or k == 0:
                open_date = start - dt.timedelta(days=int(rng.integers(60, 1500)))
            else:
                open_date = start + dt.timedelta(days=int(rng.integers(30, max(31, period - 120))))
            close_date = None
            if k > 0 and rng.random() < 0.06:
                close_date = max(open_date, start) + dt.timedelta(days=int(rng.integers(90, max(91, period - 30))))
                close_date = min(close_date, end)
            rows.append({
                "store_id": store_id, "channel": "offline", "platform": None,
                "store_name": f"{city.city} {site['site_id'][-5:]} {fmt}", "format": fmt,
                "city": city.city, "site_id": site["site_id"], "lat": site["lat"], "lon": site["lon"],
                "open_date": open_date, "close_date": close_date,
                "floor_area_sqm": float(round({"flagship": 600, "mall": 180, "street": 120, "outlet": 250}[fmt]
                                              * rng.lognormal(0, 0.15))),
                "true_format_factor": FORMAT_FACTOR[fmt],
                "true_level": site["true_potential"] * FORMAT_FACTOR[fmt],
            })
    offline = pd.DataFrame(rows)
    offline["true_level"] /= offline["true_level"].mean()
    online = pd.DataFrame({
        "store_id": [f"ON-{p.upper()}" for p in ONLINE_PLATFORMS], "channel": "online",
        "platform": list(ONLINE_PLATFORMS),
        "store_name": [f"Quanyu Demo Brand {p} flagship" for p in ONLINE_PLATFORMS],
        "open_date": None, "true_level": [PLATFORM_SHARE[p] for p in ONLINE_PLATFORMS],
    })
    return pd.concat([offline, online], ignore_index=True)


def build_products(scale: Scale, start: dt.date, end: dt.date, rng: np.random.Generator) -> pd.DataFrame:
    """The catalogue with hidden popularity and elasticity. About 45 % of SKUs launch during
    the period: the steady flow of new products."""
    n = scale.skus
    cat_idx = rng.choice(len(CATEGORY_NAMES), size=n, p=[0.2, 0.15, 0.12, 0.13, 0.12, 0.16, 0.12])
    period = (end - start).days
    rows = []
    sku_ids = _ids(rng, "", n, 6)
    cat_base = rng.normal(0, 0.3, len(CATEGORY_NAMES))
    style_effect = {"classic": 0.1, "trend": 0.0, "sport": -0.1}
    for i in range(n):
        cat = CATEGORY_NAMES[cat_idx[i]]
        spec = CATEGORIES[cat]
        lo, hi = spec.price_range
        price = float(_round_price(np.exp(rng.uniform(np.log(lo), np.log(hi))))[()])
        band_pos = (np.log(price) - np.log(lo)) / (np.log(hi) - np.log(lo))
        band = PRICE_BANDS[min(2, int(band_pos * 3))]
        style = STYLES[rng.integers(0, 3)]
        if rng.random() < 0.55:
            launch = start - dt.timedelta(days=int(rng.integers(30, 720)))
        else:
            launch = start + dt.timedelta(days=int(rng.integers(0, max(1, period - 14))))
        end_date = None
        if rng.random() < 0.15:
            end_date = max(launch, start) + dt.timedelta(days=int(rng.integers(120, 400)))
            end_date = end_date if end_date < end else None
        availability = rng.choice(["both", "online_only", "offline_only"], p=[0.85, 0.08, 0.07])
        log_pop = (cat_base[cat_idx[i]] + {"entry": 0.25, "core": 0.0, "premium": -0.35}[band]
                   + style_effect[style] + rng.normal(0, 0.7))
        rows.append({
            "sku_id": f"{cat[:2].upper()}-{sku_ids[i]}", "category": cat,
            "subcategory": spec.subcategories[rng.integers(0, 3)], "style": style,
            "sku_name": f"{style} {spec.subcategories[rng.integers(0, 3)]} {sku_ids[i][-3:]}",
            "list_price": price, "launch_date": launch, "end_date": end_date,
            "channel_availability": availability, "price_band": band,
            "true_popularity": float(np.exp(log_pop)),
            "true_elasticity": float(spec.elasticity * rng.lognormal(0, 0.15)),
            "combo": cat_idx[i] * 9 + PRICE_BANDS.index(band) * 3 + STYLES.index(style),
        })
    products = pd.DataFrame(rows)
    products["true_popularity"] /= products["true_popularity"].mean()
    return products


def build_prices(products: pd.DataFrame, start: dt.date, end: dt.date, rng: np.random.Generator) -> pd.DataFrame:
    """List-price history: 40 % of SKUs change list price once during the period."""
    rows = []
    period = (end - start).days
    for p in products.itertuples():
        first_to = None
        if rng.random() < 0.4 and period > 90:
            change = max(p.launch_date, start) + dt.timedelta(days=int(rng.integers(30, max(31, period - 30))))
            if change < end:
                first_to = change - dt.timedelta(days=1)
                new_price = float(_round_price(np.array(p.list_price * rng.choice([0.8, 0.9, 1.1, 1.15])))[()])
                rows.append((p.sku_id, change, new_price, None))
        rows.append((p.sku_id, p.launch_date, p.list_price, first_to))
    return pd.DataFrame(rows, columns=["sku_id", "valid_from", "list_price", "valid_to"]).sort_values(
        ["sku_id", "valid_from"], ignore_index=True)


EVENT_PROMOS = [  # event, phases, channel, category, discount
    ("618", ("presale", "peak"), "online", None, 0.20), ("618", ("peak",), "offline", None, 0.10),
    ("double11", ("presale", "peak"), "online", None, 0.30), ("double11", ("peak",), "offline", None, 0.10),
    ("double12", ("peak",), "online", None, 0.15), ("womens_day", ("peak",), "all", "beauty", 0.20),
    ("valentines", ("peak",), "all", "bags", 0.15), ("qixi", ("peak",), "all", "accessories", 0.15),
    ("cny", ("presale",), "all", None, 0.10),
]


def build_promotions(calendar: pd.DataFrame, start: dt.date, end: dt.date, rng: np.random.Generator) -> pd.DataFrame:
    """Event promotions from the calendar plus about three random category promotions a month."""
    rows = []
    years = sorted({d.year for d in calendar["date"]})
    for year in years:
        for event, phases, channel, category, discount in EVENT_PROMOS:
            days = calendar[(calendar["event"] == event) & calendar["phase"].isin(phases)
                            & (pd.to_datetime(calendar["date"]).dt.year == year)]["date"]
            if days.empty:
                continue
            rows.append({"promo_id": f"EV{year}-{event}-{channel}", "name": f"{event} {year} {channel}",
                         "start_date": days.min(), "end_date": days.max(), "channel": channel,
                         "platform": None, "category": category, "discount_pct": discount, "event": event})
    n_random = max(1, round((end - start).days / 30 * 3))
    promo_ids = _ids(rng, "PR", n_random, 6)
    for k in range(n_random):
        first = start + dt.timedelta(days=int(rng.integers(0, (end - start).days)))
        channel = rng.choice(["online", "offline", "all"], p=[0.5, 0.3, 0.2])
        platform = rng.choice(ONLINE_PLATFORMS) if channel == "online" and rng.random() < 0.5 else None
        rows.append({"promo_id": promo_ids[k], "name": f"category promotion {k + 1}",
                     "start_date": first, "end_date": min(end, first + dt.timedelta(days=int(rng.integers(2, 10)))),
                     "channel": channel, "platform": platform,
                     "category": CATEGORY_NAMES[rng.integers(0, len(CATEGORY_NAMES))],
                     "discount_pct": float(rng.choice([0.1, 0.15, 0.2, 0.3])), "event": None})
    return pd.DataFrame(rows)


def build_assortment(stores: pd.DataFrame, products: pd.DataFrame, start: dt.date,
                     rng: np.random.Generator) -> pd.DataFrame:
    """Ranging: each offline store carries a share of the catalogue set by its format (popular
    SKUs likelier); each online shop carries what is sold online (Douyin a curated 70 %)."""
    rows = []
    pop = products["true_popularity"].to_numpy()
    for store in stores.itertuples():
        if store.channel == "offline":
            eligible = products["channel_availability"] != "online_only"
            share = FORMAT_RANGING[store.format]
            p_ranged = np.clip(share * (pop / pop.mean()) ** 0.3, 0, 1)
        else:
            eligible = products["channel_availability"] != "offline_only"
            p_ranged = np.full(len(products), 0.7 if store.platform == "douyin" else 1.0)
        keep = eligible.to_numpy() & (rng.random(len(products)) < p_ranged)
        chosen = products[keep]
        store_open = store.open_date if isinstance(store.open_date, dt.date) else None
        valid_from = [max(l, store_open) if store_open else l for l in chosen["launch_date"]]
        valid_to = [e if isinstance(e, dt.date) else None for e in chosen["end_date"]]
        close = store.close_date if isinstance(getattr(store, "close_date", None), dt.date) else None
        if close:
            valid_to = [min(v, close) if v else close for v in valid_to]
        ranged = pd.DataFrame({"store_id": store.store_id, "sku_id": chosen["sku_id"].to_numpy(),
                               "valid_from": valid_from, "valid_to": valid_to})
        # a SKU that ended before the store opened was never on its shelves
        rows.append(ranged[[t is None or f <= t for f, t in zip(ranged["valid_from"], ranged["valid_to"])]])
    return pd.concat(rows, ignore_index=True)


def build_consumers(cities: pd.DataFrame, sites: pd.DataFrame, scale: Scale, start: dt.date,
                    end: dt.date, rng: np.random.Generator) -> pd.DataFrame:
    """People who buy from the brand. A share are members (with a OneID); each has a home cell
    (dense where the brand's segment lives), a segment, favourite categories and style, an
    activity level and a channel preference. All hidden except what the members table shows."""
    n = scale.consumers
    city_weight = cities["size"].to_numpy() / cities["size"].sum()
    city_idx = rng.choice(len(cities), size=n, p=city_weight)
    home_cell = np.empty(n, dtype=object)
    for k, city in enumerate(cities["city"]):
        mask = city_idx == k
        cs = sites[sites["city"] == city]
        w = cs["population"].to_numpy() * cs["true_segment_match"].to_numpy() ** 1.5
        home_cell[mask] = rng.choice(cs["site_id"].to_numpy(), size=mask.sum(), p=w / w.sum())
    age = rng.choice(len(AGE_BANDS), size=n, p=[0.22, 0.38, 0.25, 0.15])
    sens = rng.choice(len(SENSITIVITIES), size=n, p=[0.25, 0.45, 0.30])
    fav1 = np.zeros(n, dtype=int)
    for band in range(len(AGE_BANDS)):  # favourite category drawn from the age band's tastes
        members_of_band = age == band
        pref = AGE_CATEGORY_PREF[band] / AGE_CATEGORY_PREF[band].sum()
        fav1[members_of_band] = rng.choice(len(CATEGORY_NAMES), size=members_of_band.sum(), p=pref)
    fav2 = (fav1 + rng.integers(1, len(CATEGORY_NAMES), size=n)) % len(CATEGORY_NAMES)
    is_member = rng.random(n) < MEMBER_SHARE
    period = (end - start).days
    join = (np.datetime64(start, "D") - rng.integers(-period, 1500, size=n).astype("timedelta64[D]")).astype(object)
    member_ids = _hex_ids(rng, "M", n, 64)
    frame = pd.DataFrame({
        "consumer_id": np.arange(n), "city": cities["city"].to_numpy()[city_idx],
        "city_tier": cities["tier"].to_numpy()[city_idx].astype("int32"), "home_cell": home_cell,
        "age_band": np.array(AGE_BANDS)[age], "price_sensitivity": np.array(SENSITIVITIES)[sens],
        "is_member": is_member, "member_id": member_ids.where(is_member, None), "join_date": join,
        "fav_category_1": np.array(CATEGORY_NAMES)[fav1], "fav_category_2": np.array(CATEGORY_NAMES)[fav2],
        "fav_style": np.array(STYLES)[rng.integers(0, 3, size=n)],
        "channel_pref": np.array(CHANNEL_PREFS)[rng.choice(3, size=n, p=CHANNEL_PREF_P)],
        "activity": rng.lognormal(0, 0.9, n),
        "phone_hash": _hex_ids(rng, "", n, 128).to_numpy(),
    })
    for platform in ONLINE_PLATFORMS:
        frame[f"{platform}_id"] = _hex_ids(rng, f"{platform[:2]}_", n, 64).to_numpy()
    frame["pos_card_id"] = _hex_ids(rng, "CARD", n, 64).to_numpy()
    return frame


def affinity(consumers: pd.DataFrame) -> np.ndarray:
    """True affinity of each consumer for each product combo (category × band × style):
    an (n_consumers, N_COMBOS) array. Item popularity multiplies it per SKU."""
    age = consumers["age_band"].map({a: i for i, a in enumerate(AGE_BANDS)}).to_numpy()
    sens = consumers["price_sensitivity"].map({s: i for i, s in enumerate(SENSITIVITIES)}).to_numpy()
    cat_idx = {c: i for i, c in enumerate(CATEGORY_NAMES)}
    fav1 = consumers["fav_category_1"].map(cat_idx).to_numpy()
    fav2 = consumers["fav_category_2"].map(cat_idx).to_numpy()
    style = consumers["fav_style"].map({s: i for i, s in enumerate(STYLES)}).to_numpy()
    n = len(consumers)
    cat_w = AGE_CATEGORY_PREF[age].copy()  # (n, categories)
    rows = np.arange(n)
    cat_w[rows, fav1] *= FAVOURITE_CATEGORY_BOOST
    cat_w[rows, fav2] *= FAVOURITE_CATEGORY_BOOST / 2
    band_w = SENSITIVITY_BAND_PREF[sens]  # (n, bands)
    style_w = np.ones((n, len(STYLES)))
    style_w[rows, style] = FAVOURITE_STYLE_BOOST
    return (cat_w[:, :, None, None] * band_w[:, None, :, None] * style_w[:, None, None, :]).reshape(n, N_COMBOS)


def build_identities(consumers: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """The data bank: members' channel ids linked to their OneID, with realistic gaps (not every
    platform account is bound; a few loyalty cards and phones are not registered)."""
    members = consumers[consumers["is_member"]]
    parts = []
    for platform in ONLINE_PLATFORMS:
        linked = rng.random(len(members)) < PLATFORM_LINK_RATE[platform]
        parts.append(pd.DataFrame({"channel": platform, "channel_user_id": members[f"{platform}_id"][linked],
                                   "member_id": members["member_id"][linked]}))
    for channel, column, rate in (("pos", "pos_card_id", 0.92), ("phone", "phone_hash", 0.85)):
        linked = rng.random(len(members)) < rate
        parts.append(pd.DataFrame({"channel": channel, "channel_user_id": members[column][linked],
                                   "member_id": members["member_id"][linked]}))
    identities = pd.concat(parts, ignore_index=True)
    join = pd.to_datetime(members.set_index("member_id")["join_date"])
    identities["linked_at"] = (join.reindex(identities["member_id"]).to_numpy()
                               + pd.to_timedelta(rng.integers(0, 86_400 * 30, len(identities)), unit="s"))
    identities["linked_at"] = pd.to_datetime(identities["linked_at"]).dt.tz_localize("Asia/Shanghai")
    return identities


def build_world(scale: Scale, seed: int) -> World:
    """Draw the whole world from one seed. Deterministic: the same (scale, seed) gives the same world."""
    rng = np.random.default_rng([seed, 0])
    days = pd.date_range(scale.start, periods=scale.days, freq="D")
    start, end = days[0].date(), days[-1].date()
    cities = build_cities(scale, rng)
    sites = build_sites(cities, scale, rng)
    stores = build_stores(cities, sites, scale, start, end, rng)
    products = build_products(scale, start, end, rng)
    calendar = retail_calendar(start, end)
    consumers = build_consumers(cities, sites, scale, start, end, rng)
    world = World(
        scale=scale, seed=seed, days=days, cities=cities, sites=sites, stores=stores,
        products=products, prices=build_prices(products, start, end, rng),
        promotions=build_promotions(calendar, start, end, rng),
        assortment=build_assortment(stores, products, start, rng), calendar=calendar,
        consumers=consumers, identities=build_identities(consumers, rng),
    )
    return world
