"""Site features: what the location model knows about a candidate cell and its neighbourhood.

One function builds them for every candidate site of the lake — the rows the recommender scores —
and for the sites of the brand's own stores — the rows the model trains on. A store's row never
sees its own outcome: its revenue is not an input, its "nearest own store" is the nearest *other*
store, and the online features count only online purchases (a store's till never feeds them).

Neighbourhoods are radius buffers around the cell centre (a KD-tree on local kilometre
coordinates), so any site id works, not only H3 cells. The omnichannel features come from the
members' home cells: how many members live within the radius and how much they bought online in
the last `member_days` days — demand the brand already has in areas without a store.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from scipy import sparse
from scipy.spatial import cKDTree

EARTH_KM = 6371.0088
# numeric candidate_sites columns the contract names (any further numeric column is kept too)
AREA_COLUMNS = ("population", "daytime_population", "footfall_index", "competitors", "complementary_shops",
                "rent_per_sqm_month", "income_index")
# columns summed over each radius
SUMMED = ("population", "daytime_population", "competitors", "complementary_shops", "members", "online_members",
          "online_revenue")
RATIOS = ("members_per_1k_residents", "online_revenue_per_resident")
FORMATS = ("flagship", "mall", "street", "outlet")


class SiteFeatureSpec(BaseModel):
    """Part of `configs/location.yaml`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    radii_km: tuple[float, ...] = Field((1.0, 2.5), description="neighbourhood radii for summed features")
    member_days: int = Field(365, ge=28, description="days of online purchases counted per area")
    own_store_radius_km: float = Field(2.0, gt=0, description="own stores counted within this distance")

    def names(self, extra: tuple[str, ...] = ()) -> list[str]:
        names = [*AREA_COLUMNS, *extra]
        names += [f"{c}_{_r(r)}" for r in self.radii_km for c in (*SUMMED, *RATIOS)]
        names += ["nearest_own_store_km", self.own_stores_name, "format", "store_age_days"]
        return names

    @property
    def own_stores_name(self) -> str:
        return f"own_stores_{_r(self.own_store_radius_km)}"


def _r(radius: float) -> str:
    return f"{radius:g}km".replace(".", "p")


def haversine_km(lat1, lon1, lat2, lon2) -> np.ndarray:
    lat1, lon1, lat2, lon2 = map(np.radians, (lat1, lon1, lat2, lon2))
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_KM * np.arcsin(np.sqrt(np.clip(a, 0, 1)))


def local_km(lat: np.ndarray, lon: np.ndarray, lat0: float, lon0: float) -> np.ndarray:
    """(n, 2) east/north kilometres from (lat0, lon0): exact enough within a city."""
    x = np.radians(lon - lon0) * EARTH_KM * np.cos(np.radians(lat0))
    y = np.radians(lat - lat0) * EARTH_KM
    return np.column_stack([x, y])


def extra_area_columns(sites: pd.DataFrame) -> tuple[str, ...]:
    """Numeric columns a brand added to candidate_sites beyond the contract's (kept as features)."""
    known = {"site_id", "city", "lat", "lon", *AREA_COLUMNS}
    return tuple(c for c in sites.columns if c not in known and not c.startswith("true_")
                 and pd.api.types.is_numeric_dtype(sites[c]))


def member_areas(members: pd.DataFrame | None, online: pd.DataFrame | None, sites: pd.DataFrame) -> pd.DataFrame:
    """Per site id: members living there, members who bought online, their online revenue.

    `members`: member_id, home_cell; `online`: member_id, revenue (online purchases in the window)."""
    out = pd.DataFrame(index=pd.Index(sites["site_id"], name="site_id"))
    out["members"] = 0.0
    out["online_members"] = 0.0
    out["online_revenue"] = 0.0
    if members is None or members.empty or "home_cell" not in members:
        return out
    homes = members[["member_id", "home_cell"]].dropna()
    out["members"] = homes.groupby("home_cell").size().reindex(out.index, fill_value=0).astype(float)
    if online is not None and not online.empty:
        spend = online.groupby("member_id")["revenue"].sum()
        homes = homes.assign(revenue=homes["member_id"].map(spend))
        buyers = homes[homes["revenue"].notna()]
        out["online_members"] = buyers.groupby("home_cell").size().reindex(out.index, fill_value=0).astype(float)
        out["online_revenue"] = buyers.groupby("home_cell")["revenue"].sum().reindex(out.index, fill_value=0.0)
    return out


def neighbourhood_pairs(xy: np.ndarray, radius_km: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every ordered pair of points within `radius_km` of each other, each point with itself
    included: (rows, cols, distance_km)."""
    pairs = cKDTree(xy).query_pairs(radius_km, output_type="ndarray")
    n = len(xy)
    rows = np.concatenate([pairs[:, 0], pairs[:, 1], np.arange(n)])
    cols = np.concatenate([pairs[:, 1], pairs[:, 0], np.arange(n)])
    return rows, cols, np.linalg.norm(xy[rows] - xy[cols], axis=1)


def neighbourhood_sums(xy: np.ndarray, values: np.ndarray, radius_km: float) -> np.ndarray:
    """For each point, the sum of `values` (n, c) over the points within `radius_km` (itself included)."""
    rows, cols, _ = neighbourhood_pairs(xy, radius_km)
    n = len(xy)
    adjacency = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    return adjacency @ values


def own_store_features(lat: np.ndarray, lon: np.ndarray, stores: pd.DataFrame, radius_km: float,
                       self_store: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Distance to the nearest own store and the count within `radius_km`, for each point.
    `self_store[i]` names a store to leave out for point i (its own, when point i is a store)."""
    n = len(lat)
    if stores.empty:
        return np.full(n, 50.0), np.zeros(n)
    dist = haversine_km(lat[:, None], lon[:, None], stores["lat"].to_numpy(float)[None, :],
                        stores["lon"].to_numpy(float)[None, :])
    if self_store is not None:
        dist[self_store[:, None] == stores["store_id"].to_numpy()[None, :]] = np.inf
    nearest = np.minimum(dist.min(axis=1), 50.0)  # "no store within 50 km" is as far as it matters
    return nearest, (dist <= radius_km).sum(axis=1).astype(float)


def site_features(sites: pd.DataFrame, areas: pd.DataFrame, own_stores: pd.DataFrame, spec: SiteFeatureSpec,
                  extra: tuple[str, ...] = ()) -> pd.DataFrame:
    """Features of every candidate site (one row per site, same order), city by city.

    `areas`: member_areas(); `own_stores`: the brand's trading offline stores (store_id, city,
    lat, lon). store_age_days and format are left for the caller (training rows carry the
    store's; a recommendation assumes a mature store of the configured format)."""
    frames = []
    for city, group in sites.groupby("city", sort=False):
        lat, lon = group["lat"].to_numpy(float), group["lon"].to_numpy(float)
        xy = local_km(lat, lon, float(np.median(lat)), float(np.median(lon)))
        feats = group[[*AREA_COLUMNS, *extra]].astype(float).copy()
        area = areas.reindex(group["site_id"]).fillna(0.0)
        values = np.column_stack([
            group["population"].to_numpy(float), group["daytime_population"].to_numpy(float),
            group["competitors"].to_numpy(float), group["complementary_shops"].to_numpy(float),
            area["members"].to_numpy(float), area["online_members"].to_numpy(float),
            area["online_revenue"].to_numpy(float)])
        values = np.nan_to_num(values)
        for radius in spec.radii_km:
            sums = neighbourhood_sums(xy, values, radius)
            for k, name in enumerate(SUMMED):
                feats[f"{name}_{_r(radius)}"] = sums[:, k]
            # the brand's reach per resident: how well the area's people fit the brand
            residents = np.maximum(sums[:, 0], 1.0)
            feats[f"members_per_1k_residents_{_r(radius)}"] = 1000.0 * sums[:, 4] / residents
            feats[f"online_revenue_per_resident_{_r(radius)}"] = sums[:, 6] / residents
        city_stores = own_stores[own_stores["city"] == city]
        nearest, within = own_store_features(lat, lon, city_stores, spec.own_store_radius_km)
        feats["nearest_own_store_km"] = nearest
        feats[spec.own_stores_name] = within
        frames.append(feats)
    out = pd.concat(frames).reindex(sites.index)
    out.insert(0, "site_id", sites["site_id"].to_numpy())
    out.insert(1, "city", sites["city"].to_numpy())
    return out
