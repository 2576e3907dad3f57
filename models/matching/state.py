"""The matching family's snapshot as of a cutoff day, and the one code path that turns members
into candidates and candidates into ranker features — for training, evaluation and serving alike.

A `MatchingState` holds, as numpy arrays indexed by member and item position:
- item stats: category, price band, style, availability, age, popularity (28 / 7 days), trend,
  online share, per-segment popularity;
- member stats: segment, recency, frequency, monetary, online share, category / price-band /
  style shares, their last items (CSR);
- candidate indexes: item-to-item co-purchase neighbours (CSR), each segment's and each
  category's most popular items, the trending items and the new arrivals per category.

`candidates(members)` and `features(pairs)` are vectorised over any number of members, so a
training batch of thousands and one served request run the same code.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from scipy import sparse

from models.errors import UnknownName

PRICE_BANDS = ("entry", "core", "premium")
AVAILABILITY = ("both", "online_only", "offline_only")
SOURCES = ("repurchase", "copurchase", "segment", "category", "trending", "new_arrival", "profile")
CHANNELS = ("online", "offline")


class UnknownCategory(UnknownName, ValueError):
    """A new product's category the catalogue does not have."""


class CandidateSpec(BaseModel):
    """How many items each candidate source offers a member. Part of `configs/matching.yaml`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    repurchase: int = Field(20, ge=0)
    copurchase: int = Field(40, ge=0)
    segment: int = Field(30, ge=0)
    category: int = Field(20, ge=0, description="per favourite category")
    favourite_categories: int = Field(2, ge=1, description="a member's top categories (by share of purchases)")
    profile: int = Field(120, ge=0, description="popular items that fit the member's category × price band × style mix")
    trending: int = Field(20, ge=0)
    new_arrival: int = Field(20, ge=0, description="per favourite category")
    copurchase_days: int = Field(180, ge=7)
    copurchase_seeds: int = Field(8, ge=1, description="a member's most recent items that seed co-purchase")
    neighbours: int = Field(30, ge=1, description="co-purchase neighbours kept per item")
    popularity_days: int = Field(28, ge=1)
    trending_days: int = Field(7, ge=1)
    new_arrival_days: int = Field(28, ge=1, description="launched this many days before the cutoff, or planned within the horizon")
    horizon_days: int = Field(14, ge=1, description="the window a recommendation is for; planned launches inside it count")
    history_days: int = Field(365, ge=28, description="member history the stats read")
    segment_by: tuple[str, ...] = Field(("age_band", "price_sensitivity"), min_length=1, max_length=4,
                                        description="member columns whose values make a segment (any column of "
                                                    "raw/members, the contract's or the brand's own)")


def price_bands(products: pd.DataFrame) -> np.ndarray:
    """entry / core / premium: the tercile of the log list price within the SKU's category."""
    position = products.groupby("category")["list_price"].rank(pct=True).to_numpy()
    return np.minimum((position * 3 - 1e-9).astype(int), 2)


def segment_of(members: pd.DataFrame, columns: tuple[str, ...] = ("age_band", "price_sensitivity")) -> np.ndarray:
    """A member's segment: the values of `columns` as the CRM records them, joined by '|' ('?'
    when empty). Raises ValueError naming a column the members table does not have."""
    missing = [c for c in columns if c not in members.columns]
    if missing:
        raise ValueError(f"candidates.segment_by names {', '.join(missing)}, which raw/members does not have; "
                         f"add the column or segment by others ({', '.join(sorted(members.columns))})")
    labels = [members[c].astype("object").where(members[c].notna(), "?").astype(str) for c in columns]
    joined = labels[0]
    for more in labels[1:]:
        joined = joined + "|" + more
    return joined.to_numpy()


def _csr(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, shape) -> sparse.csr_matrix:
    return sparse.csr_matrix((values, (rows, cols)), shape=shape)


def _top_per_row(matrix: sparse.csr_matrix, n: int) -> sparse.csr_matrix:
    """Keep each row's n largest entries."""
    matrix = matrix.tocsr()
    rows, cols, vals = [], [], []
    for r in range(matrix.shape[0]):
        start, end = matrix.indptr[r], matrix.indptr[r + 1]
        if end == start:
            continue
        data, idx = matrix.data[start:end], matrix.indices[start:end]
        keep = np.argsort(-data, kind="stable")[:n]
        rows.append(np.full(len(keep), r))
        cols.append(idx[keep])
        vals.append(data[keep])
    if not rows:
        return sparse.csr_matrix(matrix.shape)
    return _csr(np.concatenate(rows), np.concatenate(cols), np.concatenate(vals), matrix.shape)


@dataclass
class Pairs:
    """Candidate (member, item) pairs with the sources that proposed them."""

    member: np.ndarray        # member positions
    item: np.ndarray          # item positions
    source_score: np.ndarray  # (n, len(SOURCES)): the source's score, NaN where it did not propose the pair

    def __len__(self) -> int:
        return len(self.member)


@dataclass
class MatchingState:
    cutoff: dt.date
    spec: CandidateSpec
    items: pd.DataFrame            # one row per item position: sku_id, category, …, popularity stats
    members: pd.DataFrame          # one row per member position: member_id, segment, stats
    categories: list[str]
    segments: list[str]
    member_category_share: np.ndarray  # (members, categories)
    member_band_share: np.ndarray      # (members, 3)
    member_style_share: np.ndarray     # (members, styles)
    styles: list[str]
    history: sparse.csr_matrix         # (members, items): lines bought within history_days
    last_bought: sparse.csr_matrix     # (members, items): days from the cutoff back to the last purchase, + 1
    neighbours: sparse.csr_matrix      # (items, items): co-purchase similarity, top-n per row
    segment_popularity: np.ndarray     # (segments, items): share of the segment's buyers who bought the item
    category_top: dict[int, np.ndarray] = field(default_factory=dict)
    new_by_category: dict[int, np.ndarray] = field(default_factory=dict)
    trending: np.ndarray = field(default_factory=lambda: np.array([], dtype=int))
    _member_pos: dict[str, int] = field(default_factory=dict, repr=False)
    _item_pos: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._member_pos = {m: i for i, m in enumerate(self.members["member_id"])}
        self._item_pos = {s: i for i, s in enumerate(self.items["sku_id"])}

    # --- building ------------------------------------------------------------------------------------

    @classmethod
    def build(cls, interactions: pd.DataFrame, members: pd.DataFrame, products: pd.DataFrame, cutoff: dt.date,
              spec: CandidateSpec) -> "MatchingState":
        """The snapshot from purchases up to and including `cutoff` (later rows are ignored).

        `interactions`: dt, member_id, sku_id, channel, units, revenue, lines (curated);
        `members`: member_id and the `spec.segment_by` columns (raw); `products`: the catalogue."""
        cut = pd.Timestamp(cutoff)
        inter = interactions[(pd.to_datetime(interactions["dt"]) <= cut)
                             & (pd.to_datetime(interactions["dt"]) > cut - pd.Timedelta(days=spec.history_days))]
        inter = inter[inter["lines"] > 0]
        items = products.reset_index(drop=True).copy()
        items["price_band"] = price_bands(items)
        items["availability"] = items["channel_availability"].fillna("both").map(
            {a: i for i, a in enumerate(AVAILABILITY)}).fillna(0).astype(int)
        categories = sorted(items["category"].astype(str).unique())
        styles = sorted(items["style"].fillna("?").astype(str).unique())
        items["category_code"] = items["category"].map({c: i for i, c in enumerate(categories)}).astype(int)
        items["style_code"] = items["style"].fillna("?").map({s: i for i, s in enumerate(styles)}).astype(int)
        launch = pd.to_datetime(items["launch_date"])
        ended = pd.to_datetime(items["end_date"])
        items["age_days"] = (cut - launch).dt.days.astype(float)
        items["available"] = ((launch <= cut + pd.Timedelta(days=spec.horizon_days))
                              & ~(ended < cut)).to_numpy()
        item_pos = {s: i for i, s in enumerate(items["sku_id"])}
        n_items = len(items)

        members = members.reset_index(drop=True).copy()
        members["segment"] = segment_of(members, spec.segment_by)
        segments = sorted(members["segment"].unique())
        members["segment_code"] = members["segment"].map({s: i for i, s in enumerate(segments)}).astype(int)
        member_pos = {m: i for i, m in enumerate(members["member_id"])}
        n_members = len(members)

        inter = inter[inter["member_id"].isin(member_pos) & inter["sku_id"].isin(item_pos)]
        m = inter["member_id"].map(member_pos).to_numpy()
        i = inter["sku_id"].map(item_pos).to_numpy()
        days_ago = (cut - pd.to_datetime(inter["dt"])).dt.days.to_numpy()
        lines = inter["lines"].to_numpy(float)
        online = (inter["channel"] == "online").to_numpy()

        history = _csr(m, i, lines, (n_members, n_items))
        # the most recent purchase per pair: the smallest days_ago + 1
        order = np.lexsort((days_ago, m, i))
        first = np.ones(len(order), dtype=bool)
        key = i[order] * n_members + m[order]
        first[1:] = key[1:] != key[:-1]
        last = _csr(m[order][first], i[order][first], days_ago[order][first] + 1.0, (n_members, n_items))

        # member stats
        frequency = np.bincount(m, weights=lines, minlength=n_members)
        monetary = np.bincount(m, weights=inter["revenue"].to_numpy(float), minlength=n_members)
        online_lines = np.bincount(m, weights=lines * online, minlength=n_members)
        recency = np.full(n_members, float(spec.history_days + 1))
        np.minimum.at(recency, m, days_ago.astype(float))
        members["recency_days"] = recency
        members["frequency"] = frequency
        members["monetary"] = monetary
        members["online_share"] = np.where(frequency > 0, online_lines / np.maximum(frequency, 1e-9), np.nan)
        members["distinct_items"] = np.diff(history.indptr).astype(float)

        def shares(codes: np.ndarray, n: int) -> np.ndarray:
            counts = _csr(m, codes[i], lines, (n_members, n)).toarray()
            total = counts.sum(axis=1, keepdims=True)
            return np.divide(counts, total, out=np.zeros_like(counts), where=total > 0)

        category_share = shares(items["category_code"].to_numpy(), len(categories))
        band_share = shares(items["price_band"].to_numpy(), 3)
        style_share = shares(items["style_code"].to_numpy(), len(styles))

        # item stats
        recent = days_ago < spec.popularity_days
        buyers = _csr(m[recent], i[recent], np.ones(recent.sum()), (n_members, n_items))
        buyers.data[:] = 1.0
        items["popularity"] = np.asarray(buyers.sum(axis=0)).ravel()
        week = days_ago < spec.trending_days
        items["popularity_7d"] = np.bincount(i[week], minlength=n_items).astype(float)
        items["trend"] = (items["popularity_7d"] / spec.trending_days + 0.1) / (
            items["popularity"] / spec.popularity_days + 0.1)
        item_lines = np.bincount(i, weights=lines, minlength=n_items)
        items["online_share"] = np.where(item_lines > 0, np.bincount(i, weights=lines * online, minlength=n_items)
                                         / np.maximum(item_lines, 1e-9), np.nan)
        items["buyers_total"] = np.asarray((history > 0).sum(axis=0)).ravel().astype(float)
        category_prior = items.groupby("category_code")["popularity"].transform("mean")
        items["category_popularity"] = category_prior.to_numpy()

        # segment popularity: share of a segment's members who bought the item in the window
        seg = members["segment_code"].to_numpy()
        seg_item = _csr(seg[m[recent]], i[recent], np.ones(recent.sum()), (len(segments), n_items)).toarray()
        seg_size = np.bincount(seg, minlength=len(segments)).astype(float)
        segment_popularity = seg_item / np.maximum(seg_size, 1.0)[:, None]

        # co-purchase: cosine similarity of items over the members who bought them
        window = days_ago < spec.copurchase_days
        bought = _csr(m[window], i[window], np.ones(window.sum()), (n_members, n_items))
        bought.data[:] = 1.0
        co = (bought.T @ bought).tocsr().astype(float)
        degree = np.sqrt(np.asarray(co.diagonal()))
        co.setdiag(0.0)
        co.eliminate_zeros()
        co = sparse.diags(1 / np.maximum(degree, 1e-9)) @ co @ sparse.diags(1 / np.maximum(degree, 1e-9))
        neighbours = _top_per_row(co.tocsr(), spec.neighbours)

        available = items["available"].to_numpy()
        popularity = items["popularity"].to_numpy()
        category_top, new_by_category = {}, {}
        age = items["age_days"].to_numpy()
        for c in range(len(categories)):
            in_cat = np.flatnonzero((items["category_code"].to_numpy() == c) & available)
            category_top[c] = in_cat[np.argsort(-popularity[in_cat], kind="stable")]
            new = in_cat[age[in_cat] <= spec.new_arrival_days]
            new_by_category[c] = new[np.argsort(age[new], kind="stable")]  # newest (and planned) first
        trend_score = np.where(available & (items["popularity_7d"].to_numpy() >= 3), items["trend"].to_numpy(), -1.0)
        trending = np.argsort(-trend_score, kind="stable")[: spec.trending]
        trending = trending[trend_score[trending] > 0]
        return cls(cutoff=cutoff, spec=spec, items=items, members=members, categories=categories,
                   segments=segments, member_category_share=category_share, member_band_share=band_share,
                   member_style_share=style_share, styles=styles, history=history, last_bought=last,
                   neighbours=neighbours, segment_popularity=segment_popularity, category_top=category_top,
                   new_by_category=new_by_category, trending=trending)

    # --- lookups ---------------------------------------------------------------------------------------

    def member_positions(self, member_ids) -> np.ndarray:
        """Positions of member ids; -1 for ids the snapshot does not know."""
        return np.array([self._member_pos.get(m, -1) for m in member_ids], dtype=int)

    def item_positions(self, sku_ids) -> np.ndarray:
        """Positions of SKU ids; -1 for ids the snapshot does not know."""
        return np.array([self._item_pos.get(s, -1) for s in sku_ids], dtype=int)

    def item_position(self, sku_id: str) -> int:
        return self._item_pos.get(sku_id, -1)

    def has_history(self, members: np.ndarray) -> np.ndarray:
        return np.diff(self.history.indptr)[members] > 0

    def favourite_categories(self, members: np.ndarray, n: int = 2) -> np.ndarray:
        """(len(members), n): the member's top categories by share (segment's, without history)."""
        shares = self.member_category_share[members].copy()
        empty = shares.sum(axis=1) == 0
        if empty.any():
            seg = self.members["segment_code"].to_numpy()[members[empty]]
            by_cat = np.zeros((len(self.segments), len(self.categories)))
            codes = self.items["category_code"].to_numpy()
            for c in range(len(self.categories)):
                by_cat[:, c] = self.segment_popularity[:, codes == c].sum(axis=1)
            shares[empty] = by_cat[seg]
        return np.argsort(-shares, axis=1, kind="stable")[:, :n]

    # --- candidates ------------------------------------------------------------------------------------

    def candidates(self, members: np.ndarray) -> Pairs:
        """Every source's proposals for these members (positions), merged into unique pairs."""
        spec = self.spec
        n_items = len(self.items)
        available = self.items["available"].to_numpy()
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, int]] = []  # (member, item, score, source)

        def add(member_idx: np.ndarray, item_idx: np.ndarray, score: np.ndarray, source: str) -> None:
            if len(member_idx):
                parts.append((member_idx, item_idx, score.astype(float), SOURCES.index(source)))

        # repurchase and co-purchase seeds: the member's items, most recent first
        sub_last = self.last_bought[members]
        rows = np.repeat(np.arange(len(members)), np.diff(sub_last.indptr))
        items_bought, days = sub_last.indices, sub_last.data
        order = np.lexsort((days, rows))
        rows, items_bought, days = rows[order], items_bought[order], days[order]
        rank_in_member = np.arange(len(rows)) - np.repeat(sub_last.indptr[:-1], np.diff(sub_last.indptr))
        keep = (rank_in_member < spec.repurchase) & available[items_bought]
        add(members[rows[keep]], items_bought[keep], 1.0 / days[keep], "repurchase")

        seeds = rank_in_member < spec.copurchase_seeds
        if seeds.any():
            seed_rows, seed_items = rows[seeds], items_bought[seeds]
            weight = 1.0 / np.sqrt(days[seeds])
            nb = self.neighbours[seed_items]
            nb_rows = np.repeat(np.arange(len(seed_items)), np.diff(nb.indptr))
            scores = sparse.csr_matrix((nb.data * weight[nb_rows], (seed_rows[nb_rows], nb.indices)),
                                       shape=(len(members), n_items))
            scores = _top_per_row(scores, spec.copurchase).tocoo()
            ok = available[scores.col]
            add(members[scores.row[ok]], scores.col[ok], scores.data[ok], "copurchase")

        seg = self.members["segment_code"].to_numpy()[members]
        seg_pop = np.where(available[None, :], self.segment_popularity, -1.0)
        seg_top = np.argsort(-seg_pop, axis=1, kind="stable")[:, : spec.segment]  # (segments, n)
        top = seg_top[seg]
        add(np.repeat(members, top.shape[1]), top.ravel(),
            np.take_along_axis(seg_pop[seg], top, axis=1).ravel(), "segment")

        favourites = self.favourite_categories(members, spec.favourite_categories)
        for slot in range(favourites.shape[1]):
            for c in np.unique(favourites[:, slot]):
                who = members[favourites[:, slot] == c]
                best = self.category_top[int(c)][: spec.category]
                add(np.repeat(who, len(best)), np.tile(best, len(who)),
                    np.tile(1.0 / (1 + np.arange(len(best))), len(who)) / (1 + slot), "category")
                new = self.new_by_category[int(c)][: spec.new_arrival]
                add(np.repeat(who, len(new)), np.tile(new, len(who)),
                    np.tile(1.0 / (1 + np.arange(len(new))), len(who)) / (1 + slot), "new_arrival")

        if spec.profile:
            fit = self.profile_fit(members) * np.where(available, self.items["popularity"].to_numpy() + 1.0, 0.0)[None, :]
            best = np.argsort(-fit, axis=1, kind="stable")[:, : spec.profile]
            score = np.take_along_axis(fit, best, axis=1)
            ok = score > 0
            add(np.repeat(members, best.shape[1])[ok.ravel()], best.ravel()[ok.ravel()], score[ok], "profile")

        trend = self.trending
        add(np.repeat(members, len(trend)), np.tile(trend, len(members)),
            np.tile(self.items["trend"].to_numpy()[trend], len(members)), "trending")

        if not parts:
            return Pairs(np.array([], int), np.array([], int), np.zeros((0, len(SOURCES))))
        member_idx = np.concatenate([p[0] for p in parts])
        item_idx = np.concatenate([p[1] for p in parts])
        score = np.concatenate([p[2] for p in parts])
        source = np.concatenate([np.full(len(p[0]), p[3]) for p in parts])
        key = member_idx.astype(np.int64) * n_items + item_idx
        unique, inverse = np.unique(key, return_inverse=True)
        table = np.full((len(unique), len(SOURCES)), np.nan)
        # several proposals of one pair by one source keep the best score
        order = np.argsort(score, kind="stable")
        table[inverse[order], source[order]] = score[order]
        return Pairs(member=(unique // n_items).astype(int), item=(unique % n_items).astype(int), source_score=table)

    def profile_fit(self, members: np.ndarray, smoothing: float = 0.05) -> np.ndarray:
        """(len(members), items): how well each item's category, price band and style match the
        member's purchase mix (shares, smoothed so an unseen category is unlikely, not impossible)."""
        items = self.items
        cat = self.member_category_share[members][:, items["category_code"].to_numpy()]
        band = self.member_band_share[members][:, items["price_band"].to_numpy()]
        style = self.member_style_share[members][:, items["style_code"].to_numpy()]
        return (cat + smoothing) * (band + smoothing) * (style + smoothing)

    # --- one item for many members (audience) ------------------------------------------------------------

    def item_frame(self, sku_id: str | None = None, attributes: dict | None = None) -> tuple[pd.DataFrame, int]:
        """A one-row item frame and its position: a catalogue SKU, or a new product described by
        attributes (category, list_price or price_band, style, channel_availability) that no
        snapshot has seen yet (position −1: no history, no co-purchase, age 0)."""
        if sku_id is not None:
            pos = self._item_pos.get(sku_id, -1)
            if pos < 0:
                raise KeyError(sku_id)
            return self.items.iloc[[pos]].reset_index(drop=True), pos
        attributes = attributes or {}
        category = attributes.get("category")
        if category not in self.categories:
            raise UnknownCategory(f"category must be one of {', '.join(self.categories)}, got {category!r}")
        code = self.categories.index(category)
        in_cat = self.items[self.items["category_code"] == code]
        if attributes.get("price_band") is not None:
            band = PRICE_BANDS.index(attributes["price_band"])
            price = float(in_cat.loc[in_cat["price_band"] == band, "list_price"].median())
        elif attributes.get("list_price") is not None:
            price = float(attributes["list_price"])
            band = int(min(2, (in_cat["list_price"] < price).mean() * 3))
        else:
            raise ValueError("give the new product's list_price or price_band")
        style = attributes.get("style") or "?"
        availability = attributes.get("channel_availability") or "both"
        row = {"sku_id": attributes.get("sku_id", "new"), "category": category, "category_code": code,
               "price_band": band, "style_code": self.styles.index(style) if style in self.styles else -1,
               "availability": AVAILABILITY.index(availability), "list_price": price, "age_days": 0.0,
               "popularity": 0.0, "popularity_7d": 0.0, "trend": 1.0, "online_share": np.nan, "buyers_total": 0.0,
               "category_popularity": float(in_cat["popularity"].mean()), "available": True}
        return pd.DataFrame([row]), -1

    def pairs_for_item(self, members: np.ndarray, item: pd.DataFrame, position: int) -> Pairs:
        """(member, item) pairs for every member given, with the score each candidate source
        would give the item (NaN where it would not propose it). Co-purchase reads all of the
        member's items in the co-purchase window (the candidate path reads the most recent few)."""
        spec = self.spec
        n = len(members)
        table = np.full((n, len(SOURCES)), np.nan)
        code = int(item["category_code"].iat[0])
        if position >= 0:
            since = np.asarray(self.last_bought[members, position].todense()).ravel()
            table[:, 0] = np.where(since > 0, 1.0 / np.maximum(since, 1), np.nan)
            recent = self.last_bought[members].copy()
            recent.data = np.where(recent.data <= spec.copurchase_days, 1.0 / np.sqrt(recent.data), 0.0)
            column = np.asarray(self.neighbours[:, position].todense()).ravel()
            co = recent @ column
            table[:, 1] = np.where(co > 0, co, np.nan)
            seg = self.members["segment_code"].to_numpy()[members]
            seg_pop = np.where(self.items["available"].to_numpy()[None, :], self.segment_popularity, -1.0)
            rank = (seg_pop > seg_pop[:, [position]]).sum(axis=1)  # the item's rank in each segment
            in_top = rank[seg] < spec.segment
            table[:, 2] = np.where(in_top, self.segment_popularity[seg, position], np.nan)
            if position in set(self.trending.tolist()):
                table[:, 4] = float(self.items["trend"].iat[position])
        favourites = self.favourite_categories(members, spec.favourite_categories)
        for slot in range(favourites.shape[1]):
            fav = favourites[:, slot] == code
            top = self.category_top[code][: spec.category]
            new = self.new_by_category[code][: spec.new_arrival]
            if position >= 0 and position in top:
                r = int(np.flatnonzero(top == position)[0])
                table[fav, 3] = np.fmax(table[fav, 3], 1.0 / (1 + r) / (1 + slot))
            if position < 0:  # a product not launched yet: the newest of its category
                table[fav, 5] = np.fmax(table[fav, 5], 1.0 / (1 + slot))
            elif position in new:
                r = int(np.flatnonzero(new == position)[0])
                table[fav, 5] = np.fmax(table[fav, 5], 1.0 / (1 + r) / (1 + slot))
        return Pairs(member=np.asarray(members), item=np.full(n, position), source_score=table)

    # --- features --------------------------------------------------------------------------------------

    ITEM_COLUMNS = ("category_code", "price_band", "style_code", "availability", "list_price", "age_days",
                    "popularity", "popularity_7d", "trend", "online_share", "buyers_total", "category_popularity")
    MEMBER_COLUMNS = ("recency_days", "frequency", "monetary", "online_share", "distinct_items", "segment_code")

    def feature_names(self) -> list[str]:
        names = [f"src_{s}" for s in SOURCES] + ["n_sources"]
        names += [f"item_{c}" for c in self.ITEM_COLUMNS] + [f"member_{c}" for c in self.MEMBER_COLUMNS]
        names += ["category_share", "band_share", "style_share", "times_bought", "days_since_bought",
                  "segment_popularity", "segment_lift", "channel_fit"]
        return names

    def _as_arrays(self) -> dict[str, np.ndarray]:
        """The member and item columns the ranker's features read, as arrays, built once: a served
        recommendation gathers a few hundred rows from them, and converting the member table (up to
        hundreds of thousands of rows) on every request cost more than the rest of it."""
        cached = self.__dict__.get("_arrays")
        if cached is None:
            items, members = self.items, self.members
            cached = {"item_matrix": items[list(self.ITEM_COLUMNS)].to_numpy(float),
                      "category_code": items["category_code"].to_numpy(), "price_band": items["price_band"].to_numpy(),
                      "style_code": items["style_code"].to_numpy(), "availability": items["availability"].to_numpy(),
                      "member_matrix": members[list(self.MEMBER_COLUMNS)].to_numpy(float),
                      "segment_code": members["segment_code"].to_numpy(),
                      "online_share": members["online_share"].to_numpy(float),
                      "overall_popularity": self.segment_popularity.mean(axis=0)}
            self.__dict__["_arrays"] = cached
        return cached

    def features(self, pairs: Pairs, item: pd.DataFrame | None = None) -> np.ndarray:
        """(len(pairs), len(feature_names())) float matrix for the ranker. `item`: a one-row
        frame (item_frame()) when every pair is about that item, which may be a new product."""
        m = pairs.member
        if item is None:
            i, items = pairs.item, self.items
        else:
            i, items = np.zeros(len(m), dtype=int), item
        known = pairs.item >= 0
        cols = [pairs.source_score, np.sum(~np.isnan(pairs.source_score), axis=1, keepdims=True).astype(float)]
        item_columns = self._as_arrays() if item is None else {
            "item_matrix": items[list(self.ITEM_COLUMNS)].to_numpy(float), "category_code": items["category_code"].to_numpy(),
            "price_band": items["price_band"].to_numpy(), "style_code": items["style_code"].to_numpy(),
            "availability": items["availability"].to_numpy()}
        arrays = self._as_arrays()
        cols.append(item_columns["item_matrix"][i])
        cols.append(arrays["member_matrix"][m])
        category_share = self.member_category_share[m, item_columns["category_code"][i]]
        band_share = self.member_band_share[m, item_columns["price_band"][i]]
        style = item_columns["style_code"][i]
        style_share = np.where(style >= 0, self.member_style_share[m, np.maximum(style, 0)], 0.0)
        at = np.maximum(pairs.item, 0)
        times = np.where(known, np.asarray(self.history[m, at]).ravel(), 0.0)
        since = np.where(known, np.asarray(self.last_bought[m, at]).ravel(), 0.0)
        since = np.where(since > 0, since - 1, np.nan)
        seg = arrays["segment_code"][m]
        seg_pop = np.where(known, self.segment_popularity[seg, at], 0.0)
        overall = np.where(known, arrays["overall_popularity"][at], 0.0)
        lift = np.where(known, seg_pop / np.maximum(overall, 1e-6), 1.0)
        online = arrays["online_share"][m]
        availability = item_columns["availability"][i]
        fit = np.where(availability == 1, online, np.where(availability == 2, 1 - online, 1.0))
        cols.append(np.column_stack([category_share, band_share, style_share, times, since, seg_pop, lift, fit]))
        return np.column_stack(cols)

    # --- persistence -----------------------------------------------------------------------------------

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.items.to_parquet(folder / "items.parquet", index=False)
        self.members.to_parquet(folder / "members.parquet", index=False)
        arrays = {"member_category_share": self.member_category_share, "member_band_share": self.member_band_share,
                  "member_style_share": self.member_style_share, "segment_popularity": self.segment_popularity,
                  "trending": self.trending}
        for c, v in self.category_top.items():
            arrays[f"category_top_{c}"] = v
        for c, v in self.new_by_category.items():
            arrays[f"new_by_category_{c}"] = v
        np.savez(folder / "arrays.npz", **arrays)
        for name in ("history", "last_bought", "neighbours"):
            sparse.save_npz(folder / f"{name}.npz", getattr(self, name))
        meta = {"cutoff": str(self.cutoff), "spec": self.spec.model_dump(), "categories": self.categories,
                "segments": self.segments, "styles": self.styles}
        (folder / "state.json").write_text(json.dumps(meta, indent=1))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "MatchingState":
        folder = Path(folder)
        meta = json.loads((folder / "state.json").read_text())
        arrays = np.load(folder / "arrays.npz")
        n_cat = len(meta["categories"])
        return cls(cutoff=dt.date.fromisoformat(meta["cutoff"]), spec=CandidateSpec(**meta["spec"]),
                   items=pd.read_parquet(folder / "items.parquet"), members=pd.read_parquet(folder / "members.parquet"),
                   categories=meta["categories"], segments=meta["segments"], styles=meta["styles"],
                   member_category_share=arrays["member_category_share"], member_band_share=arrays["member_band_share"],
                   member_style_share=arrays["member_style_share"], segment_popularity=arrays["segment_popularity"],
                   history=sparse.load_npz(folder / "history.npz"), last_bought=sparse.load_npz(folder / "last_bought.npz"),
                   neighbours=sparse.load_npz(folder / "neighbours.npz"),
                   category_top={c: arrays[f"category_top_{c}"] for c in range(n_cat)},
                   new_by_category={c: arrays[f"new_by_category_{c}"] for c in range(n_cat)},
                   trending=arrays["trending"])
