"""The matching family on the tiny lake: snapshots that never see the future, candidate sources,
one feature path for batches and single requests, the ranker, channel rules, fallbacks,
audiences for catalogue SKUs and for products described only by attributes, persistence."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from jobs.train import read
from models.matching.config import MatchingConfig
from models.matching.model import fit_ranker, purchases_between, ranking_metrics, top_k_per_member
from models.matching.pyfunc import recommend_rows
from models.matching.recommender import MatchingError, MatchingRecommender
from models.matching.state import AVAILABILITY, SOURCES, CandidateSpec, MatchingState
from models.matching.training import build_recommender

FAST = MatchingConfig.model_validate({"training": {"num_boost_round": 30, "max_members": 600, "member_batch": 300,
                                                   "params": {"objective": "lambdarank", "min_data_in_leaf": 20}},
                                      "evaluation": {"max_members": 600}})


@pytest.fixture(scope="module")
def data(tiny_lake):
    return read("matching", FAST, tiny_lake)


@pytest.fixture(scope="module")
def state(data):
    return MatchingState.build(data.interactions, data.members, data.products,
                               data.data_date - dt.timedelta(days=14), FAST.candidates)


@pytest.fixture(scope="module")
def recommender(data, ray_session) -> MatchingRecommender:
    return build_recommender(data, FAST)


def test_a_snapshot_ignores_purchases_after_its_cutoff(data, state):
    later = data.interactions[pd.to_datetime(data.interactions["dt"]) > pd.Timestamp(state.cutoff)]
    assert len(later) > 0
    changed = data.interactions.copy()
    changed.loc[later.index, "lines"] *= 50  # the future changes wildly …
    again = MatchingState.build(changed, data.members, data.products, state.cutoff, FAST.candidates)
    assert (again.history != state.history).nnz == 0  # … and the snapshot does not move
    assert np.array_equal(again.items["popularity"], state.items["popularity"])
    assert state.items.loc[state.items["available"], "age_days"].min() >= -FAST.candidates.horizon_days


def test_candidates_are_unique_available_pairs_with_their_sources(state):
    members = np.flatnonzero(state.has_history(np.arange(len(state.members))))[:200]
    pairs = state.candidates(members)
    keys = pairs.member.astype(np.int64) * len(state.items) + pairs.item
    assert len(np.unique(keys)) == len(keys)
    assert state.items["available"].to_numpy()[pairs.item].all()
    proposed = ~np.isnan(pairs.source_score)
    assert proposed.any(axis=1).all() and proposed.any(axis=0).sum() >= 5
    # repurchase proposes only items the member bought
    rep = proposed[:, SOURCES.index("repurchase")]
    assert (np.asarray(state.history[pairs.member[rep], pairs.item[rep]]).ravel() > 0).all()
    # a batch and one member at a time give the same pairs and the same features
    one = state.candidates(members[:1])
    batch_rows = pairs.member == members[0]
    assert np.array_equal(one.item, pairs.item[batch_rows])
    np.testing.assert_allclose(state.features(one), state.features(pairs)[batch_rows], equal_nan=True)


def test_ranking_metrics_on_a_known_case():
    ranked = [np.array([1, 2, 3]), np.array([7, 8, 9])]
    relevant = [{1, 3}, {5}]
    m = ranking_metrics(ranked, relevant, 3)
    ideal = 1 + 1 / np.log2(3)
    assert m["ndcg"] == pytest.approx(((1 + 1 / np.log2(4)) / ideal + 0) / 2)
    assert m["recall"] == pytest.approx((1.0 + 0.0) / 2)
    assert m["map"] == pytest.approx(((1 + 2 / 3) / 2 + 0) / 2)


def test_the_ranker_orders_each_member_s_candidates(data, state, ray_session):
    ranker, info = fit_ranker(data, state.cutoff - dt.timedelta(days=14), FAST)
    assert info["training_members"] > 50
    members = np.flatnonzero(state.has_history(np.arange(len(state.members))))[:50]
    pairs = state.candidates(members)
    scores = ranker.score(state.features(pairs))
    top = top_k_per_member(pairs, scores, members, 5)
    for m, items in zip(members, top):
        own = scores[pairs.member == m]
        assert len(items) == 5 and np.isin(items, pairs.item[pairs.member == m]).all()
        chosen = scores[(pairs.member == m) & np.isin(pairs.item, items)]
        assert chosen.min() >= np.sort(own)[-5]


def test_recommend_respects_the_channel_and_says_when_it_falls_back(recommender):
    state = recommender.state
    active = state.members["member_id"].to_numpy()[state.has_history(np.arange(len(state.members)))]
    availability = dict(zip(state.items["sku_id"], state.items["availability"]))
    for member in active[:40]:
        for channel, banned in (("online", "offline_only"), ("offline", "online_only")):
            answer = recommender.recommend(member, 10, channel)
            assert answer.fallback is None and len(answer.items) == 10
            assert len({i["sku_id"] for i in answer.items}) == 10
            assert all(availability[i["sku_id"]] != AVAILABILITY.index(banned) for i in answer.items)
    cold = state.members["member_id"].to_numpy()[~state.has_history(np.arange(len(state.members)))]
    assert recommender.recommend(cold[0], 5).fallback == "segment_popularity"
    unknown = recommender.recommend("M-not-a-member", 5, "online")
    assert unknown.fallback == "global_popularity" and len(unknown.items) == 5


def test_bad_requests_say_what_is_wrong(recommender):
    member = recommender.state.members["member_id"].iat[0]
    with pytest.raises(MatchingError, match="k must be an integer between 1 and 100"):
        recommender.recommend(member, 0)
    with pytest.raises(MatchingError, match="channel must be online or offline"):
        recommender.recommend(member, 5, "fax")
    with pytest.raises(MatchingError, match="unknown sku_id 'nope'"):
        recommender.audience(10, sku_id="nope")
    with pytest.raises(MatchingError, match="either sku_id or attributes"):
        recommender.audience(10)
    with pytest.raises(ValueError, match="category must be one of"):
        recommender.audience(10, attributes={"category": "spaceships", "list_price": 10})


def test_audience_for_a_sku_and_for_a_product_not_launched_yet(recommender):
    state = recommender.state
    sku = state.items.loc[state.items["popularity"].idxmax(), "sku_id"]
    known = recommender.audience(25, sku_id=sku)
    assert len(known.members) == 25 and not known.new_product
    scores = [m["score"] for m in known.members]
    assert scores == sorted(scores, reverse=True)
    assert known.segments and {s["segment"] for s in known.segments} <= set(state.segments)
    new = recommender.audience(10, attributes={"category": state.categories[0], "price_band": "entry",
                                               "style": state.styles[0]})
    assert new.new_product and len(new.members) == 10
    # a new product in a category goes first to members who buy that category
    top = state.member_positions([m["member_id"] for m in new.members])
    assert state.member_category_share[top, 0].mean() > state.member_category_share[:, 0].mean()


def test_save_load_and_the_pyfunc_answer_alike(recommender, tmp_path):
    loaded = MatchingRecommender.load(recommender.save(tmp_path / "rec"))
    members = recommender.state.members["member_id"].head(5).tolist()
    for member in members:
        assert loaded.recommend(member, 8, "online").items == recommender.recommend(member, 8, "online").items
    rows = recommend_rows(loaded, pd.DataFrame({"member_id": members[:2], "channel": ["online", None], "k": [3, 4]}))
    assert rows["rank"].tolist() == [1, 2, 3, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="need a member_id column"):
        recommend_rows(loaded, pd.DataFrame({"who": ["x"]}))


def test_purchases_between_is_half_open(data):
    end = data.data_date
    rows = purchases_between(data.interactions, end - dt.timedelta(days=1), end)
    days = set(pd.to_datetime(data.interactions.loc[data.interactions["member_id"].isin(rows["member_id"]), "dt"]).dt.date)
    assert end in days and len(rows) > 0
    assert purchases_between(data.interactions, end, end + dt.timedelta(days=5)).empty


def test_segments_are_made_of_whatever_member_columns_the_brand_has(data):
    """A CRM with its own labels (an under-18 band, a loyalty tier nobody else has): the members
    table keeps the brand's column through the contract, and the segments follow segment_by."""
    import pyarrow as pa

    from lake.contract import RAW_TABLES, complete

    members = data.members.assign(age_band=np.where(np.arange(len(data.members)) % 5 == 0, "under 18",
                                                    data.members["age_band"]),
                                  loyalty_tier=np.array(["gold", "silver", None])[np.arange(len(data.members)) % 3])
    typed = complete(pa.Table.from_pandas(members, preserve_index=False), RAW_TABLES["members"], keep_extra=True)
    assert "loyalty_tier" in typed.column_names
    spec = FAST.candidates.model_copy(update={"segment_by": ("loyalty_tier", "age_band")})
    cutoff = data.data_date - dt.timedelta(days=14)
    state = MatchingState.build(data.interactions, typed.to_pandas(), data.products, cutoff, spec)
    tiers = {s.split("|")[0] for s in state.segments}
    assert tiers == {"gold", "silver", "?"} and any(s.endswith("|under 18") for s in state.segments)
    assert state.segment_popularity.shape[0] == len(state.segments)
    with pytest.raises(ValueError, match="segment_by names shoe_size, which raw/members does not have"):
        MatchingState.build(data.interactions, data.members, data.products, cutoff,
                            FAST.candidates.model_copy(update={"segment_by": ("shoe_size",)}))


def test_label_windows_stack_earlier_windows_until_enough_members_bought(data):
    """On small data the ranker may learn from earlier label windows too (training.label_windows),
    one holdout length apart, until min_training_members member windows are in."""
    cutoff = data.data_date - dt.timedelta(days=28)
    training = FAST.training
    _, one = fit_ranker(data, cutoff, FAST)
    stacked = FAST.model_copy(update={"training": training.model_copy(update={"label_windows": 3})})
    _, three = fit_ranker(data, cutoff, stacked)
    assert one["training_windows"] == 1 and three["training_windows"] == 3
    assert three["training_members"] > 2 * one["training_members"]
    enough = FAST.model_copy(update={"training": training.model_copy(
        update={"label_windows": 3, "min_training_members": int(one["training_members"])})})
    assert fit_ranker(data, cutoff, enough)[1]["training_windows"] == 1  # the first window had enough


def test_candidate_spec_refuses_unknown_keys():
    with pytest.raises(Exception, match="extra"):
        CandidateSpec.model_validate({"repurchase": 5, "psychic": 3})


def test_a_version_that_serves_recent_popularity_says_so_and_leaves_out_what_was_bought(recommender, tmp_path):
    """When popularity beat the ranker on the holdout, the registered version serves it (the
    member's own purchases left out for `popularity_unseen`), says so in every answer, and keeps
    that choice when saved."""
    state = recommender.state
    member = next(i for i in range(len(state.members)) if state.history.indptr[i + 1] > state.history.indptr[i])
    member_id = str(state.members["member_id"].iat[member])
    bought = {str(s) for s in state.items["sku_id"].to_numpy()[state.history.indices[
        state.history.indptr[member]:state.history.indptr[member + 1]]]}
    popular = MatchingRecommender(state, recommender.ranker, recommender.config, {"served": "popularity_unseen"})
    answer = popular.recommend(member_id, 10, "online")
    assert answer.fallback == "recent_popularity_unseen" and len(answer.items) == 10
    assert not bought & {i["sku_id"] for i in answer.items}
    scores = [i["score"] for i in answer.items]
    assert scores == sorted(scores, reverse=True)  # the most popular first
    assert recommender.served == "ranker" and recommender.recommend(member_id, 10).fallback is None
    again = MatchingRecommender.load(popular.save(tmp_path / "popular"))
    assert again.served == "popularity_unseen" and again.recommend(member_id, 10, "online").items == answer.items


def test_the_oracle_s_affinity_read_from_truth_is_the_generator_s(data):
    """The oracle ranks by the affinity it reads from truth/ (the consumers' hidden preferences and
    truth/params/world.json's weights), never by importing the generator: it must be exactly the
    affinity the generator drew purchases from."""
    from lake.generate.world import affinity
    from models.matching.model import true_affinity

    consumers = data.truth["consumers"]
    assert np.array_equal(true_affinity(consumers, data.truth["params"]), affinity(consumers))
    assert {"channel_prefs", "channel_weight"} <= set(data.truth["params"])
