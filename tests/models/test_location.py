"""The location family on the tiny lake and on synthetic instances: features without leakage,
the recommender's constraints (property test), the greedy against exhaustive search, coverage
against brute force, persistence and the pyfunc."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs.train import read
from models.location.config import CannibalisationConfig, LocationConfig
from models.location.data import training_table
from models.location.features import haversine_km, neighbourhood_sums
from models.location.model import evaluate, ndcg_at, spatial_folds
from models.location.pyfunc import score_sites
from models.location.training import build_recommender
from models.location.recommender import (CityPlan, InfeasibleRequest, RecommendError, SiteRecommender, UnknownCity,
                                         coverage_matrix, greedy_coverage, greedy_net_gain)

CONFIG = LocationConfig()


@pytest.fixture(scope="module")
def tiny_location(tiny_lake):
    data = read("location", CONFIG, tiny_lake)
    table = training_table(data, CONFIG.features, CONFIG.training.min_trading_days)
    return data, table


@pytest.fixture(scope="module")
def recommender(tiny_location) -> SiteRecommender:
    data, table = tiny_location
    return build_recommender(data, table, CONFIG, smearing=1.0)


def test_training_rows_never_see_their_own_store(tiny_location):
    data, table = tiny_location
    trading = data.trading_stores()
    assert len(table) >= 4 and set(table["store_id"]) <= set(trading["store_id"])
    for row in table.itertuples():
        others = trading[(trading["city"] == row.city) & (trading["store_id"] != row.store_id)]
        expected = haversine_km(row.lat, row.lon, others["lat"].to_numpy(), others["lon"].to_numpy()).min()
        assert row.nearest_own_store_km == pytest.approx(min(expected, 50.0))
        assert row.nearest_own_store_km > 0  # its own store (at 0 km) is left out
    assert "revenue_annualised" not in CONFIG.features.names()


def test_neighbourhood_sums_count_points_within_the_radius():
    xy = np.array([[0.0, 0.0], [0.5, 0.0], [2.0, 0.0]])
    sums = neighbourhood_sums(xy, np.array([[1.0], [10.0], [100.0]]), 1.0)
    assert sums[:, 0].tolist() == [11.0, 11.0, 100.0]


def test_spatial_folds_keep_each_city_in_one_fold(tiny_location):
    _, table = tiny_location
    folds = spatial_folds(table, CONFIG.evaluation)
    assert table.assign(fold=folds).groupby("city")["fold"].nunique().eq(1).all()
    assert len(np.unique(folds)) == table["city"].nunique()


def test_ndcg_is_one_for_the_perfect_ranking_and_lower_otherwise():
    actual = np.array([5.0, 3.0, 9.0, 1.0])
    assert ndcg_at(actual, actual, 3) == pytest.approx(1.0)
    assert ndcg_at(actual, -actual, 3) < 0.7


def test_evaluation_reports_the_issue_keys_with_truth(tiny_location):
    data, table = tiny_location
    ev = evaluate(table, data.sites, CONFIG, data.truth)
    for key in ("spearman", "spearman_population_baseline", "spearman_gravity_baseline", "spearman_oracle",
                "ndcg_at_10"):
        assert key in ev.metrics and np.isfinite(ev.metrics[key]), key
    assert ev.metrics["spearman_oracle"] > 0.5  # the truth ranks the tiny lake's stores well
    assert len(ev.predictions) == len(table) and (ev.predictions["predicted"] > 0).all()


# --- the recommender ------------------------------------------------------------------------------

def test_recommend_answers_k_picks_with_reasons(recommender):
    city = recommender.cities[0]
    result = recommender.recommend(city, 3)
    assert [p.rank for p in result.picks] == [1, 2, 3]
    assert len({p.site_id for p in result.picks}) == 3
    for p in result.picks:
        assert p.predicted_revenue > 0 and p.cannibalisation >= 0
        assert p.net_gain == pytest.approx(p.predicted_revenue - p.cannibalisation, abs=0.02)
        assert len(p.reasons) == 3 and all("revenue" in r for r in p.reasons)
    assert result.total_net_gain == pytest.approx(sum(p.net_gain for p in result.picks), abs=0.1)
    # the greedy's gains add up to the plan's value computed from scratch
    plan = recommender.plan(city)
    index = {s: i for i, s in enumerate(plan.sites["site_id"])}
    assert plan.plan_value([index[p.site_id] for p in result.picks]) == pytest.approx(result.total_net_gain, rel=1e-6)


def test_bad_requests_say_what_is_wrong(recommender):
    city = recommender.cities[0]
    with pytest.raises(UnknownCity, match="unknown city 'Atlantis'; cities with candidate sites"):
        recommender.recommend("Atlantis", 3)
    with pytest.raises(RecommendError, match="k must be between 1 and 50"):
        recommender.recommend(city, 0)
    with pytest.raises(RecommendError, match="not among"):
        recommender.recommend(city, 2, exclude=["../../etc/passwd"])
    with pytest.raises(RecommendError, match="finite"):
        recommender.recommend(city, 2, max_rent=float("nan"))
    with pytest.raises(InfeasibleRequest, match=r"only \d+ of .* satisfy the constraints"):
        recommender.recommend(city, 5, max_rent=0.0)
    with pytest.raises(InfeasibleRequest, match="satisfy the constraints"):
        recommender.recommend(city, 10, min_distance_km=8.0)


def test_no_pick_breaks_a_constraint(recommender):
    """Random requests (k, distance, rent ceiling, excluded and forced sites, objective): every
    answer keeps every constraint, or the request is refused as infeasible. Counted, so that a
    change that makes most requests infeasible cannot pass by checking nothing."""
    seen = {"feasible": 0, "infeasible": 0}

    @settings(max_examples=40, deadline=None, derandomize=True)
    @given(k=st.integers(1, 6), min_km=st.sampled_from([0.0, 0.5, 1.0, 2.0]),
           rent_q=st.sampled_from([None, 0.5, 0.8]), n_exclude=st.integers(0, 10), n_include=st.integers(0, 2),
           objective=st.sampled_from(["net_gain", "coverage"]), seed=st.integers(0, 10_000))
    def check(k, min_km, rent_q, n_exclude, n_include, objective, seed):
        city = recommender.cities[seed % len(recommender.cities)]
        sites = recommender.plan(city).sites
        rng = np.random.default_rng(seed)
        chosen = rng.choice(sites["site_id"].to_numpy(), size=n_exclude + n_include, replace=False)
        exclude, include = list(chosen[:n_exclude]), list(chosen[n_exclude:])
        max_rent = None if rent_q is None else float(sites["rent_per_sqm_month"].quantile(rent_q))
        try:
            result = recommender.recommend(city, max(k, len(include)), min_distance_km=min_km, max_rent=max_rent,
                                           exclude=exclude, include=include, objective=objective)
        except InfeasibleRequest:
            seen["infeasible"] += 1
            return
        seen["feasible"] += 1
        picks = result.picks
        assert [p.site_id for p in picks[:len(include)]] == include and all(p.forced for p in picks[:len(include)])
        stores = recommender.stores[recommender.stores["city"] == city]
        free = [p for p in picks if not p.forced]
        for p in free:
            assert p.site_id not in exclude
            if max_rent is not None:
                assert p.rent_per_sqm_month <= max_rent
            if min_km > 0:
                assert haversine_km(p.lat, p.lon, stores["lat"].to_numpy(), stores["lon"].to_numpy()).min() >= min_km - 1e-9
        if min_km > 0:  # free picks keep their distance from every other pick, forced or not
            for a, b in itertools.combinations(picks, 2):
                if not (a.forced and b.forced):
                    assert haversine_km(a.lat, a.lon, b.lat, b.lon) >= min_km - 1e-9

    check()
    assert seen["feasible"] >= 20, seen


def _instance(seed: int, n: int = 12, m: int = 3) -> CityPlan:
    """A small city: n candidates and m own stores within ~4 km, revenues that vary 4×."""
    rng = np.random.default_rng(seed)
    sites = pd.DataFrame({"site_id": [f"s{i}" for i in range(n)], "lat": 31.2 + rng.uniform(0, 0.04, n),
                          "lon": 121.4 + rng.uniform(0, 0.04, n), "predicted_revenue": rng.uniform(5e6, 2e7, n)})
    stores = pd.DataFrame({"store_id": [f"o{j}" for j in range(m)], "lat": 31.2 + rng.uniform(0, 0.04, m),
                           "lon": 121.4 + rng.uniform(0, 0.04, m), "revenue_annualised": rng.uniform(5e6, 2e7, m)})
    return CityPlan(sites, stores, CannibalisationConfig(strength=0.8, decay_km=1.5))


@pytest.mark.parametrize("seed", range(25))
def test_greedy_is_within_5_percent_of_the_best_subset(seed):
    plan = _instance(seed)
    k = 3 + seed % 2
    feasible = np.ones(len(plan.sites), dtype=bool)
    picks, parts = greedy_net_gain(plan, k, feasible, [], 0.0)
    greedy = plan.plan_value(picks)
    assert greedy == pytest.approx(sum(gain for _, _, gain in parts), rel=1e-9)
    best = max(plan.plan_value(list(c)) for c in itertools.combinations(range(len(plan.sites)), k))
    assert greedy >= 0.95 * best, (greedy, best)


@pytest.mark.parametrize("seed", range(30))
def test_coverage_is_within_3_percent_of_the_brute_force_optimum(seed):
    """Greedy alone falls to 91% of the optimum on some of these instances; eight starts with
    1-swap local search reached the optimum on all of 300 seeds when measured."""
    rng = np.random.default_rng(seed)
    n = 14
    sites = pd.DataFrame({"lat": 31.2 + rng.uniform(0, 0.05, n), "lon": 121.4 + rng.uniform(0, 0.05, n)})
    cover = coverage_matrix(sites, 1.2)
    weight = rng.uniform(1000, 20000, n)
    feasible = np.ones(n, dtype=bool)
    picks = greedy_coverage(cover, weight, 3, feasible, [], lambda i: np.zeros(n, dtype=bool))

    def covered(plan):
        return weight[np.asarray(cover[list(plan)].sum(axis=0)).ravel() > 0].sum()

    best = max(covered(c) for c in itertools.combinations(range(n), 3))
    assert covered(picks) >= 0.97 * best


def test_save_load_and_the_pyfunc_score_alike(recommender, tmp_path):
    city = recommender.cities[-1]
    before = recommender.recommend(city, 3, min_distance_km=0.5)
    loaded = SiteRecommender.load(recommender.save(tmp_path / "rec"))
    after = loaded.recommend(city, 3, min_distance_km=0.5)
    assert [p.site_id for p in after.picks] == [p.site_id for p in before.picks]
    assert [p.net_gain for p in after.picks] == pytest.approx([p.net_gain for p in before.picks])
    ids = recommender.sites["site_id"].head(5)
    by_id = score_sites(loaded, pd.DataFrame({"site_id": ids}))["predicted_revenue"]
    features = recommender.sites.head(5).drop(columns=["site_id", "predicted_revenue"])
    by_features = score_sites(loaded, features)["predicted_revenue"]
    assert by_id.to_numpy() == pytest.approx(recommender.sites["predicted_revenue"].head(5).to_numpy())
    assert by_features.to_numpy() == pytest.approx(by_id.to_numpy())
    with pytest.raises(ValueError, match="unknown site_id: nowhere"):
        score_sites(loaded, pd.DataFrame({"site_id": ["nowhere"]}))
    with pytest.raises(ValueError, match="need site_id or every feature column"):
        score_sites(loaded, pd.DataFrame({"population": [1.0]}))
