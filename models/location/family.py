"""The location family as the platform sees it (models/family.py): its gate, metrics, memory and
the checks on a loaded site recommender."""

from __future__ import annotations

import math

from models.family import Family, Footprint, Gate



def smoke_test(recommender) -> None:
    if not recommender.recommend(recommender.cities[0], 1).picks:
        raise ValueError("smoke test: no site")


def sanity(recommender, sample: int) -> list[str]:
    """Three picks in each of `sample` cities: as many as asked, among the city's candidate sites,
    with a finite net gain."""
    problems = []
    for city in recommender.cities[:sample]:
        sites = recommender.sites[recommender.sites["city"] == city]
        k = min(3, len(sites))
        picks = recommender.recommend(city, k).picks
        if len(picks) != k:
            problems.append(f"{city}: {len(picks)} picks for k={k}")
        lat, lon = sites["lat"], sites["lon"]
        outside = [p.site_id for p in picks if not (lat.min() <= p.lat <= lat.max() and lon.min() <= p.lon <= lon.max())
                   or p.site_id not in set(sites["site_id"].astype(str))]
        if outside:
            problems.append(f"{city}: picks outside the city's candidate sites: {', '.join(outside[:3])}")
        if any(not math.isfinite(p.net_gain) for p in picks):
            problems.append(f"{city}: a pick's net gain is not finite")
    return problems[:5]


FAMILY = Family(
    name="location",
    config_ref="models.location.config:LocationConfig",
    gate=Gate(metric="spearman", higher_is_better=True, beat=["spearman_population_baseline", "spearman_gravity_baseline"]),
    headline=("spearman", "spearman_population_baseline", "spearman_gravity_baseline", "spearman_oracle",
              "ndcg_at_10", "mape", "stores", "cannibalisation_strength", "cannibalisation_decay_km"),
    served_metrics=("spearman", "spearman_population_baseline", "spearman_oracle", "ndcg_at_10"),
    date_word="data date",
    memory=Footprint("store_daily", 1.0, 10_000.0),
    api_version=1, smoke_test=smoke_test, sanity=sanity,
    api_ref="models.location.api:API", training_ref="models.location.training",
    summary="Location: store revenue from site features; spatial CV; the site recommender's snapshot.",
)
