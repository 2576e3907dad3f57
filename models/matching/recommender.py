"""The matching predictor: recommend(member, k, channel) and audience(SKU or attributes, k), from
an in-memory snapshot (no Parquet read per request) and the LambdaRank ranker.

Fallbacks, always said in the answer: a member the snapshot knows but who bought nothing in its
history gets their segment's most popular items; an id the snapshot does not know gets the most
popular items overall. Channel: an `online` context never gets an offline-only SKU, an `offline`
context never gets an online-only one; without a channel both kinds may appear.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

from models.errors import UnknownName
from models.matching.audience import audience_scores
from models.matching.config import MatchingConfig
from models.matching.model import Ranker
from models.matching.state import AVAILABILITY, MatchingState, PRICE_BANDS
from models.saved import read_meta

FORMAT_VERSION = 1
BLOCKED = {"online": AVAILABILITY.index("offline_only"), "offline": AVAILABILITY.index("online_only")}


class MatchingError(ValueError):
    """A request the predictor cannot answer; the message says what to change."""


class UnknownSku(MatchingError, UnknownName):
    """A SKU the catalogue does not have."""


@dataclass
class Recommendations:
    member_id: str
    items: list[dict]
    fallback: str | None  # None, "segment_popularity", "global_popularity", or the version's served popularity ranking
    channel: str | None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Audience:
    sku_id: str | None
    members: list[dict]
    segments: list[dict]
    new_product: bool
    scored_members: int = 0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class MatchingRecommender:
    def __init__(self, state: MatchingState, ranker: Ranker, config: MatchingConfig, meta: dict | None = None,
                 max_k: int = 100) -> None:
        self.state = state
        self.ranker = ranker
        self.config = config
        self.meta = meta or {}
        self.max_k = max_k
        items = state.items
        available = items["available"].to_numpy()
        self._availability = items["availability"].to_numpy()
        self._available = available
        self._global = np.argsort(-np.where(available, items["popularity"].to_numpy(), -1.0), kind="stable")
        self._segment = np.argsort(-np.where(available[None, :], state.segment_popularity, -1.0), axis=1, kind="stable")

    def _allowed(self, positions: np.ndarray, channel: str | None) -> np.ndarray:
        ok = self._available[positions]
        if channel is not None:
            ok &= self._availability[positions] != BLOCKED[channel]
        return ok

    def _check_k(self, k: int) -> None:
        if not isinstance(k, (int, np.integer)) or not 1 <= k <= self.max_k:
            raise MatchingError(f"k must be an integer between 1 and {self.max_k}, got {k!r}")

    @property
    def served(self) -> str:
        """What this version serves: the ranker, or the popularity ranking (with or without the
        member's own purchases) that beat it on the training run's holdout (models/matching/model.py: SERVED)."""
        return self.meta.get("served", "ranker")

    def recommend(self, member_id: str, k: int = 10, channel: str | None = None) -> Recommendations:
        self._check_k(k)
        if channel not in (None, "online", "offline"):
            raise MatchingError(f"channel must be online or offline (or absent), got {channel!r}")
        state = self.state
        position = state._member_pos.get(member_id, -1)
        ids = state.items["sku_id"].to_numpy()
        if self.served != "ranker" and position >= 0:
            bought = (state.history.indices[state.history.indptr[position]:state.history.indptr[position + 1]]
                      if self.served == "popularity_unseen" else np.array([], dtype=int))
            order = self._global[np.isin(self._global, bought, invert=True)]
            order = order[self._allowed(order, channel)][:k]
            popularity = state.items["popularity"].to_numpy()
            items = [{"sku_id": str(ids[i]), "score": round(float(popularity[i]), 6)} for i in order]
            return Recommendations(member_id, items, f"recent_{self.served}", channel)
        if position < 0 or not state.has_history(np.array([position]))[0]:
            order = self._global if position < 0 else self._segment[state.members["segment_code"].iat[position]]
            order = order[self._allowed(order, channel)][:k]
            popularity = (state.items["popularity"].to_numpy() if position < 0
                          else state.segment_popularity[state.members["segment_code"].iat[position]])
            items = [{"sku_id": str(ids[i]), "score": round(float(popularity[i]), 6)} for i in order]
            return Recommendations(member_id, items, "global_popularity" if position < 0 else "segment_popularity",
                                   channel)
        pairs = state.candidates(np.array([position]))
        scores = self.ranker.score(state.features(pairs))
        keep = self._allowed(pairs.item, channel)
        order = np.argsort(-scores[keep], kind="stable")[:k]
        chosen, chosen_scores = pairs.item[keep][order], scores[keep][order]
        items = [{"sku_id": str(ids[i]), "score": round(float(s), 6)} for i, s in zip(chosen, chosen_scores)]
        if len(items) < k:  # a thin candidate set: top up from the segment's favourites
            seen = set(chosen.tolist())
            extra = [i for i in self._segment[state.members["segment_code"].iat[position]]
                     if i not in seen and self._allowed(np.array([i]), channel)[0]][: k - len(items)]
            items += [{"sku_id": str(ids[i]), "score": None} for i in extra]
        return Recommendations(member_id, items, None, channel)

    def audience(self, k: int = 100, sku_id: str | None = None, attributes: dict | None = None,
                 segments: int = 5, prefilter: int | None = 20_000) -> Audience:
        self._check_k(k) if k <= self.max_k else None
        if k < 1 or k > 10_000:
            raise MatchingError(f"k must be between 1 and 10000 members, got {k!r}")
        if (sku_id is None) == (attributes is None):
            raise MatchingError("give either sku_id or attributes of a new product, not both")
        state = self.state
        notes = []
        try:
            item, position = state.item_frame(sku_id=sku_id, attributes=attributes)
        except KeyError:
            raise UnknownSku(f"unknown sku_id {sku_id!r}; for a product not in the catalogue yet, "
                                f"send its attributes (category, list_price or price_band, style)") from None
        if attributes is not None and attributes.get("price_band") not in (None, *PRICE_BANDS):
            raise MatchingError(f"price_band must be one of {', '.join(PRICE_BANDS)}")
        scores = audience_scores(state, self.ranker, item, prefilter, position)
        scored = int(np.isfinite(scores).sum())
        if prefilter is not None and scored < len(scores):
            notes.append(f"scored the {scored:,} members whose category and price-band history fit best")
        top = np.argsort(-scores, kind="stable")[:k]
        ids = state.members["member_id"].to_numpy()
        seg_codes = state.members["segment_code"].to_numpy()
        members = [{"member_id": str(ids[m]), "score": round(float(scores[m]), 6),
                    "segment": state.segments[seg_codes[m]]} for m in top if np.isfinite(scores[m])]
        finite = np.isfinite(scores)
        frame = pd.DataFrame({"segment": seg_codes[finite], "score": scores[finite]})
        by_segment = frame.groupby("segment")["score"].agg(["mean", "size"]).sort_values("mean", ascending=False)
        seg_rows = [{"segment": state.segments[int(s)], "mean_score": round(float(r["mean"]), 6),
                     "members": int(r["size"])} for s, r in by_segment.head(segments).iterrows()]
        return Audience(sku_id, members, seg_rows, position < 0, scored, notes)

    # --- persistence ------------------------------------------------------------------------------------

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        self.state.save(folder / "state")
        self.ranker.booster.save_model(str(folder / "ranker.txt"))
        meta = {"format_version": FORMAT_VERSION, "names": self.ranker.names, "config": self.config.model_dump(mode="json"),
                **self.meta}
        (folder / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "MatchingRecommender":
        folder = Path(folder)
        meta = read_meta(folder, "meta.json", "matching model", FORMAT_VERSION)
        ranker = Ranker(meta["names"], lgb.Booster(model_file=str(folder / "ranker.txt")))
        extra = {k: v for k, v in meta.items() if k not in ("format_version", "names", "config")}
        return cls(MatchingState.load(folder / "state"), ranker, MatchingConfig.model_validate(meta["config"]), extra)
