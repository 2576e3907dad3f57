"""A pick's strongest reasons in words a planner reads, from LightGBM's per-feature contributions
(SHAP values of the log revenue: a contribution c moves the prediction by a factor exp(c))."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

# the same for every candidate of a recommendation: never a reason to prefer one site
CONSTANT = ("format", "store_age_days")

LABELS = {
    "population": "residents in the cell",
    "daytime_population": "people in the cell in working hours",
    "footfall_index": "pedestrian traffic (city median = 1)",
    "competitors": "competing stores in the cell",
    "complementary_shops": "shops drawing the same consumers in the cell",
    "rent_per_sqm_month": "rent, CNY per m² per month",
    "income_index": "household income (city median = 1)",
    "nearest_own_store_km": "km to our nearest store",
}
AREA_LABELS = {
    "population": "residents", "daytime_population": "people in working hours", "competitors": "competing stores",
    "complementary_shops": "shops drawing the same consumers", "members": "members living",
    "online_members": "members buying online living", "online_revenue": "online spend (CNY/year) of members living",
}


def label(name: str) -> str:
    if name in LABELS:
        return LABELS[name]
    match = re.fullmatch(r"(.+)_(\d+(?:p\d+)?)km", name)
    if match and match.group(1) in AREA_LABELS:
        return f"{AREA_LABELS[match.group(1)]} within {match.group(2).replace('p', '.')} km"
    if match and match.group(1) == "own_stores":
        return f"our stores within {match.group(2).replace('p', '.')} km"
    return name.replace("_", " ")


def _number(value: float) -> str:
    if not np.isfinite(value):
        return "unknown"
    if abs(value) >= 1e6:
        return f"{value / 1e6:.1f}M"
    if abs(value) >= 1e4:
        return f"{value / 1e3:.0f}k"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}".rstrip("0").rstrip(".")


def reasons_for(contributions: pd.Series, site: pd.Series, city_sites: pd.DataFrame, n: int = 3) -> list[str]:
    """The `n` features that move this site's prediction most, e.g. "residents within 1 km: 95k
    (top 8% of Shanghai's sites) → +18% revenue"."""
    usable = contributions.drop(labels=[c for c in CONSTANT if c in contributions.index])
    strongest = usable.reindex(usable.abs().sort_values(ascending=False).index)[:n]
    out = []
    for name, c in strongest.items():
        value = float(site.get(name, np.nan))
        text = f"{label(name)}: {_number(value)}"
        if name in city_sites.columns and np.isfinite(value):
            share = float((city_sites[name].to_numpy(float) > value).mean())
            city = site.get("city", "the city")
            text += f" (top {max(share, 0.01):.0%} of {city}'s sites)" if share <= 0.5 else \
                f" (bottom {max(1 - share, 0.01):.0%} of {city}'s sites)"
        text += f" → {np.expm1(c):+.0%} revenue"
        out.append(text)
    return out
