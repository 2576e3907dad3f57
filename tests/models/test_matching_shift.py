"""The matching half of issue 20's guard: where purchases carry no personal signal, the family as
it is served must not lose to the popularity of the last 30 days, the ranking a brand would
compute without any model.

The lake: the tiny lake's purchases with their buyers shuffled (each purchase goes to a random
member: what a member bought says nothing about what they buy next, and what sells now is all
there is to learn). The family trains on everything up to 14 days before the lake's end, as
`quanyu train matching` does (the holdout decides what the version serves); it is judged on the
14 days after, which it never saw, against 30-day popularity with and without the member's own
purchases (the second is bench real's peer on MovieLens, where a film is rated once; in this
small catalogue members buy the best sellers again, and the first is the stronger), on the same
members."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pandas as pd

from jobs.tracking import REPO
from jobs import catalogue
from models.matching import training
from models.matching.config import MatchingConfig
from models.matching.model import evaluate, purchases_between, ranking_metrics_each
from models.matching.training import build_recommender

LATER_DAYS = 14


def test_without_personal_signal_the_family_as_served_does_not_lose_to_recent_popularity(tiny_lake, ray_session):
    config = MatchingConfig.from_yaml(REPO / "configs" / "matching.yaml")
    inputs = training.inputs(config)  # LATER_DAYS more than the family reads: the days after its cutoff
    inputs["interactions"] = dataclasses.replace(inputs["interactions"], days=inputs["interactions"].days + LATER_DAYS)
    data = training.prepare(catalogue.read(tiny_lake, inputs), config)
    shuffled = data.interactions.assign(
        member_id=np.random.default_rng(0).permutation(data.interactions["member_id"].to_numpy()))
    cutoff = data.data_date - dt.timedelta(days=LATER_DAYS)
    before = shuffled[shuffled["dt"] <= cutoff]
    train = dataclasses.replace(data, interactions=before, data_date=cutoff, truth=None)

    served = evaluate(train, config).extra["served"]
    recommender = build_recommender(train, config, meta={"served": served})

    later = purchases_between(shuffled, cutoff, data.data_date)
    own = before.groupby("member_id")["sku_id"].agg(set)
    members = sorted(set(later["member_id"]) & set(own.index))
    assert len(members) >= 200, len(members)
    relevant = [set(g) for _, g in later[later["member_id"].isin(members)].groupby("member_id")["sku_id"]]
    recent = before[before["dt"] > cutoff - dt.timedelta(days=30)]
    popular = recent.groupby("sku_id")["units"].sum().sort_values(ascending=False, kind="stable").index.to_numpy()
    rankings = {"family": [np.array([i["sku_id"] for i in recommender.recommend(m, 10).items]) for m in members],
                "popularity_30d": [popular[:10]] * len(members),
                "popularity_30d_unseen": [np.array([s for s in popular if s not in own[m]][:10]) for m in members]}
    scores = pd.Series({name: float(ranking_metrics_each(lists, relevant, 10)["ndcg"].mean())
                        for name, lists in rankings.items()})
    best = scores.drop("family").max()
    # measured 2026-12-03: served popularity 0.521, the best peer (30-day popularity) about the
    # same; the ranker alone 0.504 (0.97×), which this bar refuses
    assert scores["family"] >= 0.98 * best, (served, scores.to_dict())
