"""Every member scored for one product: what the served audience endpoint ranks and what the
training run's audience metric measures, in one place so that the two cannot drift apart."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from models.matching.state import MatchingState

if TYPE_CHECKING:
    from models.matching.model import Ranker


def segment_affinity(state: MatchingState, item: pd.DataFrame) -> np.ndarray:
    """Per member, the share of their segment's recent buyers who bought in the item's category
    and price band: the segment-popularity score of a product that has no sales of its own."""
    items = state.items
    same = ((items["category_code"].to_numpy() == item["category_code"].iat[0])
            & (items["price_band"].to_numpy() == item["price_band"].iat[0]))
    by_segment = state.segment_popularity[:, same].sum(axis=1)
    return by_segment[state.members["segment_code"].to_numpy()]


def audience_scores(state: MatchingState, ranker: Ranker, item: pd.DataFrame, prefilter: int | None,
                    position: int | None = None) -> np.ndarray:
    """The ranker's score of the item for every member (−inf for those the prefilter drops).
    `prefilter`: keep the members whose category and price-band shares fit the item best."""
    n = len(state.members)
    members = np.arange(n)
    if prefilter is not None and prefilter < n:
        fit = (state.member_category_share[:, int(item["category_code"].iat[0])] + 0.05) * (
            state.member_band_share[:, int(item["price_band"].iat[0])] + 0.05) * np.log1p(state.members["frequency"].to_numpy())
        members = np.sort(np.argsort(-fit, kind="stable")[:prefilter])
    if position is None:
        position = state.item_position(str(item["sku_id"].iat[0]))
    pairs = state.pairs_for_item(members, item, position)
    out = np.full(n, -np.inf)
    out[members] = ranker.score(state.features(pairs, item))
    return out
