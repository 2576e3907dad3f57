"""How much a new own store takes from the brand's stores nearby, estimated from the brand's own
openings and closings.

The share model (see the recommender): a store keeps base · (1 + s·P) / (1 + s·P') of its revenue
when the pull of the brand's other open stores on it goes from P to P', a store d km away pulling
exp(−d / λ). Each opening or closing is a natural experiment for the stores around it: their
revenue in the 8 weeks after (skipping the first two) against the 8 weeks before, with the same
ratio of the brand's stores in other cities subtracted (season, events and trend are national).
(s, λ) are chosen on a grid to fit those log-ratios by least squares.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from models.location.features import haversine_km

WINDOW_DAYS = 56
SETTLE_DAYS = 14
NEAR_KM = 6.0
STRENGTHS = np.round(np.arange(0.0, 2.01, 0.05), 2)
DECAYS = np.round(np.arange(0.2, 4.01, 0.1), 2)


@dataclass
class CannibalisationEstimate:
    strength: float
    decay_km: float
    events: int
    observations: int
    rmse: float
    rmse_without: float  # the same observations predicted as no effect at all

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _open_share(stores: pd.DataFrame, start: dt.date, end: dt.date) -> np.ndarray:
    """Per store, the share of days in [start, end] it traded."""
    days = (end - start).days + 1
    opened = pd.to_datetime(stores["open_date"]).dt.date
    closed = pd.to_datetime(stores["close_date"]).dt.date
    out = np.zeros(len(stores))
    for i, (o, c) in enumerate(zip(opened, closed)):
        first = start if pd.isna(o) or o < start else o
        last = end if pd.isna(c) or c > end else c
        out[i] = max(0, (last - first).days + 1) / days
    return out


def observations(stores: pd.DataFrame, daily: pd.DataFrame) -> pd.DataFrame:
    """One row per (event, neighbouring store): the neighbour's control-adjusted log revenue ratio
    and, for the fit, its distances to every store of its city with their open shares in each window.

    `stores`: offline stores (store_id, city, lat, lon, open_date, close_date); `daily`: dt,
    store_id, revenue_net (offline)."""
    daily = daily.assign(dt=pd.to_datetime(daily["dt"]).dt.date)
    first, last = min(daily["dt"]), max(daily["dt"])
    revenue = daily.pivot_table(index="dt", columns="store_id", values="revenue_net", aggfunc="sum")
    events = []
    for row in stores.itertuples():
        for kind, day in (("open", row.open_date), ("close", row.close_date)):
            if pd.notna(day) and first + dt.timedelta(days=WINDOW_DAYS) <= day <= last - dt.timedelta(
                    days=SETTLE_DAYS + WINDOW_DAYS):
                events.append((row.store_id, row.city, kind, day))
    rows = []
    for store_id, city, kind, day in events:
        before = (day - dt.timedelta(days=WINDOW_DAYS), day - dt.timedelta(days=1))
        after = (day + dt.timedelta(days=SETTLE_DAYS), day + dt.timedelta(days=SETTLE_DAYS + WINDOW_DAYS - 1))

        def window_mean(span):
            block = revenue.loc[(revenue.index >= span[0]) & (revenue.index <= span[1])]
            full = block.notna().sum() >= 0.9 * WINDOW_DAYS  # traded (nearly) every day of the window
            return block.mean().where(full)

        ratio = np.log(window_mean(after) / window_mean(before))
        in_city = stores[stores["city"] == city]
        control = ratio.drop(index=in_city["store_id"], errors="ignore").dropna()
        if len(control) < 3:
            continue
        event_store = in_city[in_city["store_id"] == store_id].iloc[0]
        share_before = _open_share(in_city, *before)
        share_after = _open_share(in_city, *after)
        for j, nb in enumerate(in_city.itertuples()):
            if nb.store_id == store_id or not np.isfinite(ratio.get(nb.store_id, np.nan)):
                continue
            if haversine_km(nb.lat, nb.lon, event_store["lat"], event_store["lon"]) > NEAR_KM:
                continue
            dist = haversine_km(nb.lat, nb.lon, in_city["lat"].to_numpy(float), in_city["lon"].to_numpy(float))
            others = np.arange(len(in_city)) != j
            rows.append({"event_store": store_id, "kind": kind, "store_id": nb.store_id,
                         "y": float(ratio[nb.store_id] - control.median()),
                         "dist": dist[others], "share_before": share_before[others], "share_after": share_after[others]})
    return pd.DataFrame(rows)


def estimate(stores: pd.DataFrame, daily: pd.DataFrame, min_observations: int = 30) -> CannibalisationEstimate | None:
    """The (strength, decay) that best explain the neighbours' revenue changes; None with fewer
    than `min_observations` neighbour observations (the caller keeps its configured prior)."""
    obs = observations(stores, daily)
    if len(obs) < min_observations:
        return None
    y = obs["y"].to_numpy()
    best = (np.inf, 0.0, 1.0)
    for decay in DECAYS:
        pull_before = np.array([(np.exp(-d / decay) * s).sum() for d, s in zip(obs["dist"], obs["share_before"])])
        pull_after = np.array([(np.exp(-d / decay) * s).sum() for d, s in zip(obs["dist"], obs["share_after"])])
        for strength in STRENGTHS:
            predicted = np.log1p(strength * pull_before) - np.log1p(strength * pull_after)
            sse = float(((y - predicted) ** 2).sum())
            if sse < best[0]:
                best = (sse, float(strength), float(decay))
    sse, strength, decay = best
    return CannibalisationEstimate(strength, decay, int(obs["event_store"].nunique()), len(obs),
                                   float(np.sqrt(sse / len(y))), float(np.sqrt((y**2).mean())))
