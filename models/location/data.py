"""What the location family learns from (its inputs, models/location/training.py), and the
training table built from it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pandas as pd

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
    currency: str | None = None  # of every amount (the lake's settings.yaml); None: the default

    def trading_stores(self) -> pd.DataFrame:
        """Offline stores trading at the data date, with their site's position."""
        perf = self.performance
        recent = perf[pd.to_datetime(perf["last_dt"]) >= pd.Timestamp(self.data_date) - pd.Timedelta(days=30)]
        stores = self.stores[self.stores["store_id"].isin(recent["store_id"])]
        return stores[stores["lat"].notna() & stores["lon"].notna()].reset_index(drop=True)


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
