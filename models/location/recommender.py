"""The site recommender: for a city and k, which candidate sites to open next.

Every candidate site is scored once, when the recommender is built: its predicted revenue as a
mature store of the planned format, given the brand's stores as they trade today. A request then
only chooses.

`net_gain` (default): greedy. Each step adds the feasible site with the largest marginal gain of
the plan's value — its own revenue minus what it takes from the brand's stores and from the
earlier picks — under a Huff-style share model: a store x keeps base_x · (1 + s·P_x) / (1 + s·P'_x)
of its base revenue when the pull of the brand's other stores on it rises from P_x to P'_x, a
store at d km pulling exp(−d / decay). `plan_value` computes a plan's value from scratch; the
greedy's gains add up to it.

`coverage`: the maximal covering location problem. Demand points are the city's cells weighted by
their residents; those within the service radius of an existing store are already served. Greedy
on newly covered residents, then 1-swap local search until no swap improves the plan.

Constraints: minimum distance to own stores and between picks, maximum rent, sites excluded,
sites forced in (taken first, in the order given, exempt from the other constraints; later picks
keep their distance from them).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import lightgbm as lgb
import numpy as np
import pandas as pd
from scipy import sparse
from scipy.spatial import cKDTree

from models.errors import BeyondVersion, UnknownName
from models.location.config import CannibalisationConfig, LocationConfig
from models.location.features import haversine_km, local_km
from models.location.model import SiteModel
from models.location.reasons import reasons_for
from models.saved import read_meta

Objective = Literal["net_gain", "coverage"]
FORMAT_VERSION = 1


class RecommendError(ValueError):
    """A request the recommender cannot answer; the message says what to change."""


class UnknownCity(RecommendError, UnknownName):
    """A city with no candidate sites."""


class InfeasibleRequest(RecommendError, BeyondVersion):
    """No set of the city's candidate sites meets the request's constraints."""


class UnknownSites(RecommendError, UnknownName):
    """Sites to include or exclude that are not among the city's candidates."""


@dataclass
class Pick:
    rank: int
    site_id: str
    lat: float
    lon: float
    predicted_revenue: float  # CNY per year, after the picks before it
    cannibalisation: float    # CNY per year it takes from own stores and earlier picks
    net_gain: float           # predicted_revenue − cannibalisation
    rent_per_sqm_month: float
    population: float
    covered_population: float | None = None
    forced: bool = False
    reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


@dataclass
class Recommendation:
    city: str
    k: int
    objective: str
    picks: list[Pick]
    total_net_gain: float
    covered_population: float | None
    candidates: int
    feasible: int
    seconds: float

    def as_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k != "picks"}
        out["picks"] = [p.as_dict() for p in self.picks]
        return out


def pull_matrix(lat_a, lon_a, lat_b, lon_b, c: CannibalisationConfig) -> np.ndarray:
    d = haversine_km(np.asarray(lat_a, float)[:, None], np.asarray(lon_a, float)[:, None],
                     np.asarray(lat_b, float)[None, :], np.asarray(lon_b, float)[None, :])
    return np.where(d <= c.max_km, np.exp(-d / c.decay_km), 0.0)


class CityPlan:
    """The numbers one city's recommendation works on: candidates, own stores, their pulls."""

    def __init__(self, sites: pd.DataFrame, stores: pd.DataFrame, c: CannibalisationConfig) -> None:
        self.sites = sites.reset_index(drop=True)
        self.stores = stores.reset_index(drop=True)
        self.c = c
        self.base = self.sites["predicted_revenue"].to_numpy(float)
        lat, lon = self.sites["lat"].to_numpy(float), self.sites["lon"].to_numpy(float)
        self.site_to_store = pull_matrix(lat, lon, self.stores["lat"], self.stores["lon"], c)  # (n, m)
        store_pull = pull_matrix(self.stores["lat"], self.stores["lon"], self.stores["lat"], self.stores["lon"], c)
        np.fill_diagonal(store_pull, 0.0)
        self.store_base = self.stores["revenue_annualised"].to_numpy(float)
        self.store_p0 = store_pull.sum(axis=1)          # pull on each store today
        self.site_p0 = self.site_to_store.sum(axis=1)   # pull of today's stores on each site

    def site_pull(self, i: int) -> np.ndarray:
        """Pull between candidate i and every candidate."""
        s = self.sites
        return pull_matrix(s["lat"].to_numpy(float)[[i]], s["lon"].to_numpy(float)[[i]], s["lat"], s["lon"], self.c)[0]

    def kept(self, base: np.ndarray, p0: np.ndarray, p: np.ndarray) -> np.ndarray:
        s = self.c.strength
        return base * (1 + s * p0) / (1 + s * p)

    def plan_value(self, picks: list[int]) -> float:
        """Revenue the plan adds to the brand: the picks' revenue plus the change of the own
        stores' revenue, all from the share model. Computed from scratch (the greedy's check)."""
        if not picks:
            return 0.0
        idx = np.asarray(picks)
        pair = np.array([self.site_pull(i)[idx] for i in idx])
        np.fill_diagonal(pair, 0.0)
        picks_value = self.kept(self.base[idx], self.site_p0[idx], self.site_p0[idx] + pair.sum(axis=1)).sum()
        store_p = self.store_p0 + self.site_to_store[idx].sum(axis=0)
        stores_change = (self.kept(self.store_base, self.store_p0, store_p) - self.store_base).sum()
        return float(picks_value + stores_change)


def greedy_net_gain(plan: CityPlan, k: int, feasible: np.ndarray, forced: list[int], min_between_km: float,
                    ) -> tuple[list[int], list[tuple[float, float, float]]]:
    """Picks and, per pick, (its revenue, what it takes, the marginal gain)."""
    lat, lon = plan.sites["lat"].to_numpy(float), plan.sites["lon"].to_numpy(float)
    store_p = plan.store_p0.copy()                 # pull on each own store with the picks so far
    site_p = plan.site_p0.copy()                   # pull on each candidate from stores and picks
    picks: list[int] = []
    pick_p0: list[float] = []
    pick_p: list[float] = []
    pick_pull_rows: list[np.ndarray] = []          # pull of each pick on every candidate
    out: list[tuple[float, float, float]] = []
    allowed = feasible.copy()
    for step in range(k):
        # loss of every existing store and earlier pick if candidate c joined
        kept_now = plan.kept(plan.store_base, plan.store_p0, store_p)
        loss = (kept_now[None, :] - plan.kept(plan.store_base[None, :], plan.store_p0[None, :],
                                               store_p[None, :] + plan.site_to_store)).sum(axis=1)
        for j, row in enumerate(pick_pull_rows):
            base_j = plan.base[picks[j]]
            now_j = plan.kept(base_j, pick_p0[j], pick_p[j])
            loss += now_j - plan.kept(base_j, pick_p0[j], pick_p[j] + row)
        own = plan.kept(plan.base, plan.site_p0, site_p)
        gain = own - loss
        if step < len(forced):
            choice = forced[step]
        else:
            candidates = np.flatnonzero(allowed)
            if candidates.size == 0:
                break
            choice = int(candidates[np.argmax(gain[candidates])])
        out.append((float(own[choice]), float(loss[choice]), float(gain[choice])))
        row = plan.site_pull(choice)
        row[choice] = 0.0
        for j, prow in enumerate(pick_pull_rows):
            pick_p[j] += prow[choice]
        store_p += plan.site_to_store[choice]
        site_p += row
        picks.append(choice)
        pick_p0.append(float(plan.site_p0[choice]))
        pick_p.append(float(site_p[choice]))
        pick_pull_rows.append(row)
        allowed[choice] = False
        if min_between_km > 0:
            allowed &= haversine_km(lat[choice], lon[choice], lat, lon) >= min_between_km
    return picks, out


def coverage_matrix(sites: pd.DataFrame, radius_km: float) -> sparse.csr_matrix:
    """(n, n) 0/1: candidate i serves cell j when within `radius_km`."""
    lat, lon = sites["lat"].to_numpy(float), sites["lon"].to_numpy(float)
    xy = local_km(lat, lon, float(np.median(lat)), float(np.median(lon)))
    tree = cKDTree(xy)
    pairs = tree.query_pairs(radius_km, output_type="ndarray")
    n = len(sites)
    rows = np.concatenate([pairs[:, 0], pairs[:, 1], np.arange(n)])
    cols = np.concatenate([pairs[:, 1], pairs[:, 0], np.arange(n)])
    return sparse.csr_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n, n))


def greedy_coverage(cover: sparse.csr_matrix, weight: np.ndarray, k: int, feasible: np.ndarray,
                    forced: list[int], blocked_by: callable, swap_rounds: int = 3, starts: int = 8) -> list[int]:
    """Maximise the weight of cells covered by the picks: greedy, then 1-swap local search, from
    `starts` different first picks (the best single sites); the best plan wins.
    `blocked_by(i)` gives the candidates a pick at i rules out (min distance between picks)."""
    candidates = np.flatnonzero(feasible)
    first_choices: list[int | None] = [None]
    if not forced and candidates.size and starts > 1:
        single = cover[candidates] @ weight
        first_choices = [int(c) for c in candidates[np.argsort(-single, kind="stable")[:starts]]]
    best, best_value = [], -1.0
    for first in first_choices:
        plan = _greedy_cover(cover, weight, k, feasible, forced if first is None else [first], blocked_by)
        plan = _swap_improve(cover, weight, plan, feasible, len(forced), blocked_by, swap_rounds)
        value = float(weight[np.asarray(cover[plan].sum(axis=0)).ravel() > 0].sum()) if plan else 0.0
        if value > best_value + 1e-9:
            best, best_value = plan, value
    return best


def _greedy_cover(cover, weight, k, feasible, forced, blocked_by) -> list[int]:
    picks: list[int] = []
    covered = np.zeros(len(weight), dtype=bool)
    allowed = feasible.copy()
    for step in range(k):
        if step < len(forced):
            choice = forced[step]
        else:
            candidates = np.flatnonzero(allowed)
            if candidates.size == 0:
                break
            gains = cover[candidates] @ np.where(covered, 0.0, weight)
            choice = int(candidates[np.argmax(gains)])
        picks.append(choice)
        covered |= cover[choice].toarray()[0].astype(bool)
        allowed[choice] = False
        allowed &= ~blocked_by(choice)
    return picks


def _swap_improve(cover, weight, picks, feasible, n_forced, blocked_by, rounds):
    """Replace one free pick at a time by the best feasible site outside the plan, while that
    raises the covered weight."""
    picks = list(picks)

    def covered_by(plan):
        return np.asarray(cover[plan].sum(axis=0)).ravel() > 0

    for _ in range(rounds):
        improved = False
        for pos in range(n_forced, len(picks)):
            others = picks[:pos] + picks[pos + 1:]
            base = covered_by(others) if others else np.zeros(len(weight), dtype=bool)
            allowed = feasible.copy()
            allowed[picks] = False
            for o in others:
                allowed &= ~blocked_by(o)
            candidates = np.flatnonzero(allowed)
            if candidates.size == 0:
                continue
            residual = np.where(base, 0.0, weight)
            gains = cover[candidates] @ residual
            best = int(candidates[np.argmax(gains)])
            current = float((cover[picks[pos]] @ residual)[0])
            if gains.max() > current + 1e-9:
                picks[pos] = best
                improved = True
        if not improved:
            break
    return picks


class SiteRecommender:
    """Scores of every candidate site plus the own stores: what a recommendation needs, in memory."""

    def __init__(self, model: SiteModel, sites: pd.DataFrame, stores: pd.DataFrame, config: LocationConfig,
                 meta: dict | None = None) -> None:
        self.model = model
        self.config = config
        self.meta = meta or {}
        self.stores = stores.reset_index(drop=True)
        sites = sites.reset_index(drop=True).copy()
        sites["format"] = config.recommender.format
        sites["store_age_days"] = float(config.recommender.mature_age_days)
        sites["predicted_revenue"] = model.predict(sites)
        self.sites = sites
        self._by_city = {city: idx for city, idx in sites.groupby("city").indices.items()}
        self._plans: dict[str, CityPlan] = {}
        self._cover: dict[str, sparse.csr_matrix] = {}

    @property
    def cities(self) -> list[str]:
        return sorted(self._by_city)

    def plan(self, city: str) -> CityPlan:
        if city not in self._plans:
            sites = self.sites.iloc[self._by_city[city]]
            self._plans[city] = CityPlan(sites, self.stores[self.stores["city"] == city],
                                         self.config.recommender.cannibalisation)
        return self._plans[city]

    def recommend(self, city: str, k: int, *, min_distance_km: float | None = None, max_rent: float | None = None,
                  exclude: list[str] | tuple[str, ...] = (), include: list[str] | tuple[str, ...] = (),
                  objective: Objective = "net_gain", service_radius_km: float | None = None) -> Recommendation:
        started = time.perf_counter()
        if city not in self._by_city:
            raise UnknownCity(f"unknown city {city!r}; cities with candidate sites: {', '.join(self.cities)}")
        if not 1 <= k <= self.config.recommender.max_k:
            raise RecommendError(f"k must be between 1 and {self.config.recommender.max_k}, got {k}")
        if objective not in ("net_gain", "coverage"):
            raise RecommendError(f"objective must be net_gain or coverage, got {objective!r}")
        for name, value in (("min_distance_km", min_distance_km), ("max_rent", max_rent),
                            ("service_radius_km", service_radius_km)):
            if value is not None and not (np.isfinite(value) and value >= 0):
                raise RecommendError(f"{name} must be a finite number ≥ 0, got {value}")
        plan = self.plan(city)
        sites = plan.sites
        ids = sites["site_id"].to_numpy()
        position = {s: i for i, s in enumerate(ids)}
        unknown = [s for s in [*exclude, *include] if s not in position]
        if unknown:
            raise UnknownSites(f"site(s) not among {city}'s candidates: {', '.join(map(str, unknown[:5]))}")
        both = set(exclude) & set(include)
        if both:
            raise RecommendError(f"site(s) both excluded and included: {', '.join(sorted(both)[:5])}")
        forced = list(dict.fromkeys(position[s] for s in include))
        if len(forced) > k:
            raise RecommendError(f"{len(forced)} sites forced in but k is {k}")
        lat, lon = sites["lat"].to_numpy(float), sites["lon"].to_numpy(float)
        feasible = np.ones(len(sites), dtype=bool)
        if max_rent is not None:
            feasible &= ~(sites["rent_per_sqm_month"].to_numpy(float) > max_rent)
        if exclude:
            feasible[[position[s] for s in exclude]] = False
        min_km = float(min_distance_km or 0.0)
        if min_km > 0 and len(plan.stores):
            near = haversine_km(lat[:, None], lon[:, None], plan.stores["lat"].to_numpy(float)[None, :],
                                plan.stores["lon"].to_numpy(float)[None, :]).min(axis=1)
            feasible &= near >= min_km
        for f in forced:  # later picks keep their distance from forced sites
            if min_km > 0:
                feasible &= haversine_km(lat[f], lon[f], lat, lon) >= min_km
            feasible[f] = False
        n_feasible = int(feasible.sum())

        def blocked_by(i: int) -> np.ndarray:
            if min_km <= 0:
                return np.zeros(len(sites), dtype=bool)
            return haversine_km(lat[i], lon[i], lat, lon) < min_km

        covered_total = None
        if objective == "net_gain":
            picks, parts = greedy_net_gain(plan, k, feasible, forced, min_km)
            coverage_of = {}
        else:
            radius = service_radius_km or self.config.recommender.service_radius_km
            cover, weight = self._coverage(city, radius)
            picks = greedy_coverage(cover, weight, k, feasible, forced, blocked_by)
            _, parts = _net_gain_parts(plan, picks)
            covered = np.zeros(len(weight), dtype=bool)
            coverage_of = {}
            for i in picks:
                row = cover[i].toarray()[0].astype(bool)
                coverage_of[i] = float(weight[row & ~covered].sum())
                covered |= row
            covered_total = float(weight[covered].sum())
        if len(picks) < k:
            raise InfeasibleRequest(
                f"only {len(picks)} of {city}'s {len(sites)} candidate sites satisfy the constraints "
                f"({n_feasible} before spacing the picks); ask for fewer sites or relax min_distance_km / max_rent")
        contributions = self.model.contributions(sites.iloc[picks])
        out = []
        for rank, (i, (own, loss, gain)) in enumerate(zip(picks, parts), start=1):
            row = sites.iloc[i]
            out.append(Pick(rank=rank, site_id=str(row["site_id"]), lat=float(row["lat"]), lon=float(row["lon"]),
                            predicted_revenue=round(own, 2), cannibalisation=round(loss, 2), net_gain=round(gain, 2),
                            rent_per_sqm_month=float(row["rent_per_sqm_month"]), population=float(row["population"]),
                            covered_population=coverage_of.get(i), forced=i in forced,
                            reasons=reasons_for(contributions.iloc[rank - 1], row, sites)))
        return Recommendation(city=city, k=k, objective=objective, picks=out,
                              total_net_gain=round(sum(p.net_gain for p in out), 2),
                              covered_population=covered_total, candidates=len(sites), feasible=n_feasible,
                              seconds=round(time.perf_counter() - started, 4))

    def _coverage(self, city: str, radius_km: float) -> tuple[sparse.csr_matrix, np.ndarray]:
        key = f"{city}|{radius_km:g}"
        plan = self.plan(city)
        if key not in self._cover:
            self._cover[key] = coverage_matrix(plan.sites, radius_km)
        cover = self._cover[key]
        weight = np.nan_to_num(plan.sites["population"].to_numpy(float))
        if len(plan.stores):  # cells an existing store already serves count for nothing new
            near = haversine_km(plan.sites["lat"].to_numpy(float)[:, None], plan.sites["lon"].to_numpy(float)[:, None],
                                plan.stores["lat"].to_numpy(float)[None, :], plan.stores["lon"].to_numpy(float)[None, :])
            weight = np.where(near.min(axis=1) <= radius_km, 0.0, weight)
        return cover, weight

    # --- persistence ------------------------------------------------------------------------------

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.model.booster_.save_model(str(folder / "booster.txt"))
        keep = [c for c in self.sites.columns if c not in ("format", "store_age_days", "predicted_revenue")]
        self.sites[keep].to_parquet(folder / "sites.parquet", index=False)
        self.stores.to_parquet(folder / "stores.parquet", index=False)
        meta = {"format_version": FORMAT_VERSION, "names": self.model.names, "smearing": self.model.smearing_,
                "config": self.config.model_dump(mode="json"), **self.meta}
        (folder / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "SiteRecommender":
        folder = Path(folder)
        meta = read_meta(folder, "meta.json", "location model", FORMAT_VERSION)
        config = LocationConfig.model_validate(meta["config"])
        t = config.training
        model = SiteModel(meta["names"], dict(t.params), t.num_boost_round, t.seed)
        model.booster_ = lgb.Booster(model_file=str(folder / "booster.txt"))
        model.smearing_ = float(meta["smearing"])
        extra = {k: v for k, v in meta.items() if k not in ("format_version", "names", "smearing", "config")}
        return cls(model, pd.read_parquet(folder / "sites.parquet"), pd.read_parquet(folder / "stores.parquet"),
                   config, extra)


def _net_gain_parts(plan: CityPlan, picks: list[int]) -> tuple[float, list[tuple[float, float, float]]]:
    """(value, per-pick (revenue, cannibalisation, gain)) for a plan built in the given order."""
    parts, before = [], 0.0
    for j in range(len(picks)):
        value = plan.plan_value(picks[: j + 1])
        idx = np.asarray(picks[: j + 1])
        pair = np.array([plan.site_pull(i)[idx] for i in idx])
        np.fill_diagonal(pair, 0.0)
        own = float(plan.kept(plan.base[idx[-1]], plan.site_p0[idx[-1]], plan.site_p0[idx[-1]] + pair[-1].sum()))
        gain = value - before
        parts.append((own, own - gain, gain))
        before = value
    return before, parts
