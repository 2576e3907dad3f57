"""What the location family reads from the lake, and the training table built from it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pandas as pd

from lake.contract import RAW_TABLES, complete
from lake.store import Lake, LakeError
from models.location.features import SiteFeatureSpec, extra_area_columns, member_areas, own_store_features, site_features


@dataclass
class LocationData:
    sites: pd.DataFrame            # raw candidate_sites
    stores: pd.DataFrame           # raw stores, offline only
    performance: pd.DataFrame      # curated store_performance
    members: pd.DataFrame | None   # member_id, home_cell
    online: pd.DataFrame | None    # member_id, revenue: online purchases in the member window
    data_date: dt.date             # the lake's last day with sales
    daily: pd.DataFrame | None = None  # dt, store_id, revenue_net of offline stores (cannibalisation)
    truth: pd.DataFrame | None = None  # store_id, true_level (only for evaluation; generated lakes)

    def trading_stores(self) -> pd.DataFrame:
        """Offline stores trading at the data date, with their site's position."""
        perf = self.performance
        recent = perf[pd.to_datetime(perf["last_dt"]) >= pd.Timestamp(self.data_date) - pd.Timedelta(days=30)]
        stores = self.stores[self.stores["store_id"].isin(recent["store_id"])]
        return stores[stores["lat"].notna() & stores["lon"].notna()].reset_index(drop=True)


def read_location_data(lake: Lake, member_days: int = 365) -> LocationData:
    """Read the tables the location family needs. Raises LakeError naming what is missing."""
    for zone, table in (("raw", "candidate_sites"), ("raw", "stores"), ("curated", "store_performance")):
        if not lake.files(zone, table):
            hint = "run quanyu data merge first" if zone == "curated" else "the brand must provide it"
            raise LakeError(f"the location family needs {zone}/{table} under {lake.root}; {hint}")
    sites = complete(lake.read("raw", "candidate_sites"), RAW_TABLES["candidate_sites"]).to_pandas()
    sites = sites.drop_duplicates("site_id").reset_index(drop=True)
    stores = complete(lake.read("raw", "stores"), RAW_TABLES["stores"]).to_pandas()
    stores = stores[stores["channel"] == "offline"].reset_index(drop=True)
    performance = lake.read("curated", "store_performance").to_pandas()
    if performance.empty:
        raise LakeError("curated/store_performance has no offline store: the location model learns from "
                        "the brand's own stores and needs at least a few")
    data_date = pd.to_datetime(performance["last_dt"]).max().date()
    members = online = None
    if lake.files("raw", "members"):
        members = complete(lake.read("raw", "members"), RAW_TABLES["members"]).to_pandas()[["member_id", "home_cell"]]
    days = [d for d in lake.partitions("curated", "interactions") if d > data_date - dt.timedelta(days=member_days)]
    if days:
        frames = [lake.read("curated", "interactions", d).select(["member_id", "channel", "revenue"]).to_pandas()
                  for d in days]
        both = pd.concat(frames, ignore_index=True)
        online = both[both["channel"] == "online"].groupby("member_id", as_index=False)["revenue"].sum()
    daily = lake.read_all("curated", "store_daily", columns=["store_id", "channel", "revenue_net"]).to_pandas()
    daily = daily[daily["channel"] == "offline"].drop(columns="channel")
    truth = None
    if lake.files("truth", "stores"):
        truth = lake.read("truth", "stores").to_pandas()[["store_id", "true_level"]]
    return LocationData(sites, stores, performance, members, online, data_date, daily, truth)


def training_table(data: LocationData, spec: SiteFeatureSpec, min_trading_days: int) -> pd.DataFrame:
    """One row per offline store trading at the data date with at least `min_trading_days`:
    its site's features (own store left out of the own-store features), its format and age, and
    the target `revenue_annualised`."""
    extra = extra_area_columns(data.sites)
    areas = member_areas(data.members, data.online, data.sites)
    trading = data.trading_stores()
    features = site_features(data.sites, areas, trading, spec, extra)
    perf = data.performance[data.performance["trading_days"] >= min_trading_days]
    perf = perf[perf["store_id"].isin(trading["store_id"])]
    rows = perf[["store_id", "site_id", "revenue_annualised", "open_date", "first_dt"]].merge(
        trading[["store_id", "lat", "lon", "format"]], on="store_id", how="inner")
    rows = rows.merge(features.drop(columns=["city"]), on="site_id", how="inner")
    cities = data.sites.set_index("site_id")["city"]
    rows.insert(1, "city", rows["site_id"].map(cities).to_numpy())
    # own-store features without the store itself, against the stores of its city
    for city, idx in rows.groupby("city").groups.items():
        part = rows.loc[idx]
        nearest, within = own_store_features(part["lat"].to_numpy(float), part["lon"].to_numpy(float),
                                             trading[trading["city"] == city], spec.own_store_radius_km,
                                             self_store=part["store_id"].to_numpy())
        rows.loc[idx, "nearest_own_store_km"] = nearest
        rows.loc[idx, spec.own_stores_name] = within
    opened = pd.to_datetime(rows["open_date"]).fillna(pd.to_datetime(rows["first_dt"]))
    rows["store_age_days"] = (pd.Timestamp(data.data_date) - opened).dt.days.clip(lower=0).astype(float)
    rows["format"] = rows["format"].fillna("mall")
    return rows.drop(columns=["open_date", "first_dt"]).sort_values("store_id").reset_index(drop=True)
