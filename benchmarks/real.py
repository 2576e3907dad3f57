"""`quanyu bench real`: the demand and matching families on real public data, against the simple
methods a brand would otherwise use, with paired bootstrap intervals.

The data are not Quanyu's and not committed: each comes inside a package on the registry and is
fetched at run time (`pip download --no-deps`) into a cache, then read from the wheel:
- MovieLens 100K (recbole's wheel): 100,000 ratings by 943 users of 1,682 films, Sep 1997 – Apr
  1998. As demand: ratings per film per day (intermittent, a few hundred active items); as
  matching: which films a user rates next. GroupLens' terms: research use, no redistribution.
- CDNOW (lifetimes' wheel): 69,659 purchases of 23,570 customers of an online CD shop, Jan 1997 –
  Jun 1998, with units and amounts. As demand: the shop's daily units (one series: the export has
  no product detail).

Every dataset goes through the bring-your-own-data path a brand would use (`quanyu data import`
of one sales-lines export, validate, merge, train with the committed config), cut at an origin;
the days after it are the holdout. Peers on exactly the same cells: moving averages (7, 28 days),
seasonal naive (7), Croston SBA and TSB (intermittent demand); global and 30-day popularity,
item-kNN and implicit's ALS (the user's own history left out).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lake.store import Lake

BOOTSTRAP = 1000
HORIZON = 28


@dataclass(frozen=True)
class Source:
    package: str  # a pinned requirement: the wheel that ships the file
    member: str  # the file's path inside the wheel
    licence: str


SOURCES = {
    "movielens-100k": Source("recbole==1.2.1", "recbole/dataset_example/ml-100k/ml-100k.inter",
                             "MovieLens 100K, GroupLens: research use, no redistribution (fetched, never committed)"),
    "cdnow": Source("Lifetimes==0.11.3", "lifetimes/datasets/CDNOW_master.txt",
                    "CDNOW master sample (Fader & Hardie), shipped by lifetimes (MIT)"),
}


def fetch(name: str, cache: Path) -> bytes:
    """The dataset's file, from its package's wheel in `cache` (downloaded once)."""
    source = SOURCES[name]
    cache.mkdir(parents=True, exist_ok=True)
    project = source.package.split("==")[0].lower()
    wheels = [w for w in cache.glob("*.whl") if w.name.lower().startswith(project.replace("-", "_") + "-")]
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--only-binary", ":all:",
                        "-d", str(cache), source.package], check=True)
        wheels = [w for w in cache.glob("*.whl") if w.name.lower().startswith(project.replace("-", "_") + "-")]
    with zipfile.ZipFile(wheels[0]) as wheel:
        return wheel.read(source.member)


def movielens_export(raw: bytes) -> tuple[pd.DataFrame, dict]:
    """MovieLens ratings as a sales-lines export: one line a rating, one unit, no price."""
    import io

    frame = pd.read_csv(io.BytesIO(raw), sep="\t")
    frame.columns = [c.split(":")[0] for c in frame.columns]
    export = pd.DataFrame({"user": frame["user_id"], "film": frame["item_id"],
                           "when": pd.to_datetime(frame["timestamp"], unit="s", utc=True).dt.tz_convert("America/Chicago")})
    return export.sort_values("when", kind="stable").reset_index(drop=True), {
        "customer_id": "user", "product_id": "film", "timestamp": "when"}


def cdnow_export(raw: bytes) -> tuple[pd.DataFrame, dict]:
    """CDNOW purchases as a sales-lines export: one line a purchase of `quantity` CDs for `amount`."""
    import io

    frame = pd.read_csv(io.BytesIO(raw), sep=r"\s+", header=0, names=["customer", "date", "quantity", "amount"],
                        dtype={"customer": str, "date": str})
    frame = frame[frame["quantity"] > 0]
    export = pd.DataFrame({"customer": frame["customer"], "product": "cd",
                           "day": pd.to_datetime(frame["date"], format="%Y%m%d").dt.strftime("%Y-%m-%d"),
                           "quantity": frame["quantity"], "price": (frame["amount"] / frame["quantity"]).round(2)})
    return export.reset_index(drop=True), {"customer_id": "customer", "product_id": "product", "timestamp": "day",
                                           "quantity": "quantity", "price": "price"}


# --- lakes ----------------------------------------------------------------------------------------------

def make_lake(export: pd.DataFrame, mapping: dict, folder: Path, name: str, unit_price: float | None,
              timezone: str) -> Lake:
    """An imported, validated and merged lake of `export` (Ray must be up)."""
    from jobs import import_data, merge, validate

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.parquet"
    export.to_parquet(path)
    lake = Lake(folder / "lake")
    imported = import_data.main(import_data.ImportConfig(sales=path, mapping=mapping, unit_price=unit_price,
                                                         timezone=timezone), lake)
    if imported.problems:
        raise RuntimeError("; ".join(p.line() for p in imported.problems))
    checked = validate.main(validate.ValidateConfig(), lake)
    if checked.exit_code:
        raise RuntimeError("; ".join(v.line() for v in checked.violations[:5]))
    merged = merge.main(merge.MergeConfig(), lake)
    if merged.exit_code:
        raise RuntimeError(str(merged.failed))
    return lake


def train_and_load(family: str, lake: Lake, work: Path, tracking_uri: str, say, label: str) -> tuple[object, float]:
    """Train `family` on `lake` with its committed config, as `quanyu train` does; the registered
    version's predictor (forecaster, recommender) as serving loads it, and the training seconds."""
    from jobs import train
    from models.families import family as registered
    from models.registry import Registry

    config, _ = registered(family).config()
    started = time.monotonic()
    trained = train.main(family, config, lake, tracking_uri, artifact_root=str(work / "mlartifacts"))
    seconds = time.monotonic() - started
    say(f"{label}: {family} v{trained.version} trained in {seconds:.0f} s")
    return Registry(tracking_uri).load(family, version=trained.version).predictor, seconds


# --- demand ---------------------------------------------------------------------------------------------

def daily_grid(demand: pd.DataFrame, first_day: dict, end: dt.date) -> tuple[pd.DataFrame, np.ndarray, list]:
    """Units and revenue of every series on every day from its first sale to `end` (0 where no row):
    what the peers and WRMSSE's scales read. Returns the long frame, the units matrix (series × days,
    NaN before a series' first sale) and the days."""
    days = pd.date_range(min(first_day.values()), end).date
    series = sorted(first_day)
    pos = {s: i for i, s in enumerate(series)}
    day_pos = {d: i for i, d in enumerate(days)}
    units = np.zeros((len(series), len(days)))
    revenue = np.zeros_like(units)
    rows = demand[demand["dt"] <= end]
    i = rows[["store_id", "sku_id"]].apply(tuple, axis=1).map(pos).to_numpy()
    j = rows["dt"].map(day_pos).to_numpy()
    np.add.at(units, (i, j), rows["units_sold"].to_numpy(float))
    np.add.at(revenue, (i, j), rows["revenue_net"].to_numpy(float))
    started = np.array([[d >= first_day[s] for d in days] for s in series])
    units[~started] = np.nan
    long = pd.DataFrame({"store_id": np.repeat([s[0] for s in series], len(days)),
                         "sku_id": np.repeat([s[1] for s in series], len(days)),
                         "dt": np.tile(days, len(series)), "units_sold": units.ravel(), "revenue_net": revenue.ravel()})
    return long.dropna(subset=["units_sold"]), units, series


def peer_forecasts(units: np.ndarray, alpha: float = 0.1, beta: float = 0.1) -> dict[str, np.ndarray]:
    """Each peer's forecast of every series (rows of `units`, NaN before its first sale), one
    level per series for the whole horizon except seasonal naive (the last week repeated)."""
    filled = np.nan_to_num(units)
    seen = ~np.isnan(units)
    last7, last28 = filled[:, -7:], filled[:, -28:]
    out = {"moving_average_7": last7.mean(axis=1, keepdims=True).repeat(HORIZON, axis=1),
           "moving_average_28": (last28.sum(axis=1) / np.maximum(seen[:, -28:].sum(axis=1), 1))[:, None].repeat(HORIZON, axis=1),
           "seasonal_naive_7": np.tile(last7, HORIZON // 7)}
    # Croston (SBA) and TSB over the days since each series' first sale, all series at once
    n = units.shape[0]
    size, interval, gap = np.full(n, np.nan), np.full(n, np.nan), np.ones(n)
    prob, tsb_size = np.full(n, np.nan), np.full(n, np.nan)
    for t in range(units.shape[1]):
        y, live = filled[:, t], seen[:, t]
        sale = live & (y > 0)
        first = sale & np.isnan(size)
        size = np.where(first, y, np.where(sale, size + alpha * (y - size), size))
        interval = np.where(first, gap, np.where(sale, interval + alpha * (gap - interval), interval))
        gap = np.where(sale, 1, np.where(live, gap + 1, gap))
        prob = np.where(live & np.isnan(prob), sale.astype(float), np.where(live, prob + beta * (sale - prob), prob))
        tsb_size = np.where(first, y, np.where(sale, tsb_size + alpha * (y - tsb_size), tsb_size))
    croston = np.nan_to_num((1 - alpha / 2) * size / interval)
    out["croston_sba"] = croston[:, None].repeat(HORIZON, axis=1)
    out["tsb"] = np.nan_to_num(prob * tsb_size)[:, None].repeat(HORIZON, axis=1)
    return out


PEERS_PYTHON = Path(__file__).resolve().parents[1] / ".venv-peers" / "bin" / "python"


def statsforecast_peers(units: np.ndarray, series: list, origin: dt.date, folder: Path, say) -> dict[str, np.ndarray]:
    """statsforecast's AutoETS (weekly season) on every series from its first sale to the origin,
    as `quanyu bench demand` runs it: in .venv-peers (statsforecast needs pandas < 3), a subprocess
    reading the same series. Empty when that environment is missing (`make .venv-peers/bin/python`)."""
    if not PEERS_PYTHON.exists():
        say("statsforecast peers skipped: no .venv-peers (make .venv-peers/bin/python)")
        return {}
    folder.mkdir(parents=True, exist_ok=True)
    days = pd.date_range(end=pd.Timestamp(origin), periods=units.shape[1], freq="D")
    ids = np.array([f"{s}|{k}" for s, k in series], dtype=object)
    seen = ~np.isnan(units)
    rows, cols = np.nonzero(seen)
    long = pd.DataFrame({"unique_id": ids[rows], "ds": days[cols], "y": units[rows, cols]})
    paths = [folder / "series.parquet", folder / "peers.parquet", folder / "peers.json"]
    long.to_parquet(paths[0])
    done = subprocess.run([str(PEERS_PYTHON), str(Path(__file__).parent / "peers" / "statsforecast_demand.py"),
                           str(paths[0]), str(HORIZON), str(paths[1]), str(paths[2])], capture_output=True, text=True)
    if done.returncode != 0:
        say(f"statsforecast peers failed: {done.stderr[-300:]}")
        return {}
    peers = pd.read_parquet(paths[1])
    grid = pd.DataFrame({"unique_id": np.repeat(ids, HORIZON),
                         "ds": np.tile(pd.date_range(pd.Timestamp(origin) + pd.Timedelta(days=1), periods=HORIZON), len(ids))})
    grid = grid.merge(peers, how="left", on=["unique_id", "ds"])
    return {"auto_ets": grid["AutoETS"].fillna(0).clip(lower=0).to_numpy(),
            "croston_optimized": grid["CrostonOptimized"].fillna(0).clip(lower=0).to_numpy()}


def demand_case(name: str, export: pd.DataFrame, mapping: dict, work: Path, *, unit_price: float | None,
                timezone: str, tracking_uri: str, say) -> dict:
    """Train demand on the lake cut HORIZON days before its end; score the HORIZON days after."""
    from models.metrics import bootstrap_wrmsse_ratio, series_rmsse, series_scales

    when = pd.to_datetime(export[mapping["timestamp"]])
    local = when.dt.tz_convert(timezone) if when.dt.tz is not None else when
    end = local.dt.date.max()
    origin = end - dt.timedelta(days=HORIZON)
    full = make_lake(export, mapping, work / "full", name, unit_price, timezone)
    cut = make_lake(export[(local.dt.date <= origin).to_numpy()], mapping, work / "cut", name, unit_price, timezone)
    forecaster, seconds = train_and_load("demand", cut, work, tracking_uri, say, name)
    origin = forecaster.origin_
    history = cut.read_all("curated", "demand_daily").to_pandas()
    history = history.astype({"store_id": str, "sku_id": str})
    sold = history[history["units_sold"] > 0]
    first_day = sold.groupby(["store_id", "sku_id"])["dt"].min().to_dict()
    long, units, series = daily_grid(history, first_day, origin)
    scales = series_scales(long)
    days = [origin + dt.timedelta(days=h) for h in range(1, HORIZON + 1)]
    actual_rows = full.read_all("curated", "demand_daily").to_pandas().astype({"store_id": str, "sku_id": str})
    actual_rows = actual_rows[actual_rows["dt"].isin(days)]
    actual = pd.Series(actual_rows["units_sold"].to_numpy(float),
                       index=pd.MultiIndex.from_frame(actual_rows[["store_id", "sku_id", "dt"]]))
    grid = pd.DataFrame({"store_id": np.repeat([s[0] for s in series], HORIZON),
                         "sku_id": np.repeat([s[1] for s in series], HORIZON), "dt": np.tile(days, len(series))})
    grid["units_sold"] = actual.groupby(level=[0, 1, 2]).sum().reindex(
        pd.MultiIndex.from_frame(grid[["store_id", "sku_id", "dt"]])).fillna(0).to_numpy()

    forecasts = {k: v.ravel() for k, v in peer_forecasts(units).items()}
    forecasts.update(statsforecast_peers(units, series, origin, work / "statsforecast", say))
    known = forecaster.panel_.series.astype(str)
    pairs = pd.DataFrame(series, columns=["store_id", "sku_id"])
    in_panel = pairs.merge(known.assign(found=True), how="left", on=["store_id", "sku_id"])["found"].fillna(False).to_numpy(bool)
    rows = forecaster.planned_rows(pairs[in_panel].reset_index(drop=True), days)
    p50 = forecaster.predict(rows)
    p10, p90 = forecaster.intervals(p50)
    bare = copy.copy(forecaster).blend({}).predict(rows)  # the global LightGBM alone, without the simple forecasts
    scored = pd.DataFrame({"store_id": rows["store_id"].astype(str), "sku_id": rows["sku_id"].astype(str),
                           "dt": pd.to_datetime(rows["dt"]).dt.date, "p10": p10, "p50": p50, "p90": p90})
    scored = grid.merge(scored, how="left", on=["store_id", "sku_id", "dt"])
    forecasts["quanyu"] = scored["p50"].fillna(0).to_numpy()
    lightgbm = grid.merge(scored[["store_id", "sku_id", "dt"]].assign(bare=bare), how="left", on=["store_id", "sku_id", "dt"])
    forecasts["quanyu_lightgbm_alone"] = lightgbm["bare"].fillna(0).to_numpy()
    table = {m: series_rmsse(scales, grid.assign(prediction=f)) for m, f in forecasts.items()}
    scores = {m: float((t["rmsse"] * t["weight"]).sum() / t["weight"].sum()) for m, t in table.items()}
    peers = {m: s for m, s in scores.items() if not m.startswith("quanyu")}
    best = min(peers, key=peers.get)
    low, high = bootstrap_wrmsse_ratio(table["quanyu"], table[best], BOOTSTRAP)
    covered = scored["p10"].notna() & (grid["units_sold"] >= scored["p10"]) & (grid["units_sold"] <= scored["p90"])
    with_band = scored["p10"].notna()
    units_total = grid.loc[with_band, "units_sold"].sum()
    return {"dataset": name, "series": len(series), "series_forecast_by_quanyu": int(in_panel.sum()),
            "origin": str(origin), "holdout_days": HORIZON, "training_seconds": round(seconds, 1),
            "wrmsse": {m: round(s, 4) for m, s in scores.items()}, "best_peer": best,
            "ratio_to_best_peer": round(scores["quanyu"] / scores[best], 3),
            "ratio_95ci": [round(low, 3), round(high, 3)],
            "coverage_p10_p90_rows": round(float(covered[with_band].mean()), 3),
            "coverage_p10_p90_units": round(float(grid.loc[covered, "units_sold"].sum() / units_total), 3)
            if units_total else None}


# --- matching ---------------------------------------------------------------------------------------------

def matching_case(name: str, export: pd.DataFrame, mapping: dict, work: Path, *, quantile: float, timezone: str,
                  tracking_uri: str, say, window_days: int = 30) -> dict:
    """Train matching on the interactions up to the `quantile` of time; score the next
    `window_days` days' items of the users seen before, against popularity peers."""
    from models.matching.model import ranking_metrics_each
    from models.metrics import bootstrap_mean_difference

    when = pd.to_datetime(export[mapping["timestamp"]]).dt.tz_convert(timezone)
    cutoff = when.quantile(quantile).date()
    user, item = export[mapping["customer_id"]].astype(str), export[mapping["product_id"]].astype(str)
    before = (when.dt.date <= cutoff).to_numpy()
    after = ((when.dt.date > cutoff) & (when.dt.date <= cutoff + dt.timedelta(days=window_days))).to_numpy()
    cut = make_lake(export[before], mapping, work / f"cut-{quantile}", name, 1.0, timezone)
    recommender, seconds = train_and_load("matching", cut, work, tracking_uri, say, f"{name} (cutoff {cutoff})")
    seen = pd.DataFrame({"user": user[before], "item": item[before], "when": when[before]})
    holdout = pd.DataFrame({"user": user[after], "item": item[after]})
    users = sorted(set(holdout["user"]) & set(seen["user"]))
    relevant = [set(holdout.loc[holdout["user"] == u, "item"]) for u in users]
    own = seen.groupby("user")["item"].agg(set)
    recent = seen[seen["when"].dt.date > cutoff - dt.timedelta(days=30)]

    def popular(counts: pd.Series) -> list[np.ndarray]:
        order = counts.sort_values(ascending=False, kind="stable").index.to_numpy()
        return [np.array([i for i in order if i not in own.get(u, set())][:10]) for u in users]

    ranked = {"quanyu": [np.array([r["sku_id"] for r in recommender.recommend(u, 10).items]) for u in users],
              "popularity": popular(seen["item"].value_counts()),
              "popularity_30d": popular(recent["item"].value_counts()),
              **factorisation_peers(seen, users, work, say)}
    each = {m: ranking_metrics_each(r, relevant, 10)["ndcg"] for m, r in ranked.items()}
    als = [m for m in each if m.startswith("als ")]
    if als:  # the ALS setting that did best on this holdout stands for ALS (its best case, not ours)
        best_als = max(als, key=lambda m: each[m].mean())
        settings = best_als.removeprefix("als ")
        each["implicit_als"] = each.pop(best_als)
        for m in als:
            each.pop(m, None)
    else:
        settings = None
    scores = {m: float(v.mean()) for m, v in each.items()}
    peers = {m: s for m, s in scores.items() if m != "quanyu"}
    best = max(peers, key=peers.get)
    low, high = bootstrap_mean_difference(each["quanyu"], each[best], BOOTSTRAP)
    return {"dataset": name, "cutoff_quantile": quantile, "cutoff": str(cutoff), "holdout_days": window_days,
            "users": len(users), "training_seconds": round(seconds, 1),
            "ndcg_at_10": {m: round(s, 4) for m, s in scores.items()}, "best_peer": best,
            "ratio_to_best_peer": round(scores["quanyu"] / scores[best], 3),
            "difference_95ci": [round(low, 4), round(high, 4)], "implicit_als_settings": settings}


def factorisation_peers(seen: pd.DataFrame, users: list[str], work: Path, say) -> dict[str, list[np.ndarray]]:
    """Item-kNN (cosine, in this process) and implicit's ALS at each setting of bench matching's
    grid (in .venv-peers; skipped, saying so, without it), trained on the user × item counts up
    to the cutoff; each user's own items left out, as for the popularity peers. Keys: "item_knn"
    and "als <settings>"; values: the 10 item ids per user in `users`."""
    from scipy import sparse

    from benchmarks.matching import PEERS_PYTHON, implicit_als, item_knn

    user_codes, user_ids = pd.factorize(seen["user"])
    item_codes, item_ids = pd.factorize(seen["item"])
    counts = sparse.coo_matrix((np.ones(len(seen)), (user_codes, item_codes)),
                               shape=(len(user_ids), len(item_ids))).tocsr().tocoo()  # duplicates summed
    members = pd.Index(user_ids).get_indexer(users)
    out = {"item_knn": list(np.asarray(item_ids)[item_knn(counts, members, 10)])}
    if not PEERS_PYTHON.exists():
        say("implicit ALS peer skipped: no .venv-peers (make .venv-peers/bin/python)")
        return out
    work.mkdir(parents=True, exist_ok=True)
    for run in implicit_als(counts, members, 10, np.ones(len(item_ids), bool), work, exclude_own=True):
        if "items" not in run:
            say(f"implicit ALS {run} failed")
            continue
        items = run.pop("items")
        label = ", ".join(f"{k} {v}" for k, v in run.items() if k not in ("fit_seconds", "recommend_seconds"))
        out[f"als {label}"] = list(np.asarray(item_ids)[items])
    return out


def main(out: Path, say=print) -> dict:
    """Every case; writes out/real.json and returns the report. Ray must be up."""
    out.mkdir(parents=True, exist_ok=True)
    tracking_uri = f"sqlite:///{out / 'mlflow.db'}"
    cache = out / "cache"
    movielens, ml_mapping = movielens_export(fetch("movielens-100k", cache))
    cdnow, cd_mapping = cdnow_export(fetch("cdnow", cache))
    report = {"sources": {k: {"package": s.package, "file": s.member, "licence": s.licence} for k, s in SOURCES.items()},
              "demand": [], "matching": []}
    report["demand"].append(demand_case("movielens-100k", movielens, ml_mapping, out / "demand-movielens",
                                        unit_price=1.0, timezone="America/Chicago", tracking_uri=tracking_uri, say=say))
    report["demand"].append(demand_case("cdnow", cdnow, cd_mapping, out / "demand-cdnow", unit_price=None,
                                        timezone="America/New_York", tracking_uri=tracking_uri, say=say))
    for quantile in (0.8, 0.7):
        report["matching"].append(matching_case("movielens-100k", movielens, ml_mapping, out / "matching-movielens",
                                                quantile=quantile, timezone="America/Chicago",
                                                tracking_uri=tracking_uri, say=say))
    (out / "real.json").write_text(json.dumps(report, indent=2))
    return report


def summary_lines(report: dict) -> list[str]:
    """The tables `quanyu bench real` prints."""
    lines = ["demand (WRMSSE, lower is better; ratio = Quanyu / best peer, 95 % paired bootstrap over series)"]
    for case in report["demand"]:
        peers = ", ".join(f"{m} {s:.3f}" for m, s in case["wrmsse"].items() if m != "quanyu")
        lines.append(f"  {case['dataset']:<16} quanyu {case['wrmsse']['quanyu']:.3f}  best {case['best_peer']} "
                     f"→ ratio {case['ratio_to_best_peer']:.3f} {case['ratio_95ci']}  coverage rows "
                     f"{case['coverage_p10_p90_rows']} units {case['coverage_p10_p90_units']}  ({peers})")
    lines.append("matching (NDCG@10, higher is better; 95 % paired bootstrap of the difference over users)")
    for case in report["matching"]:
        peers = ", ".join(f"{m} {s:.3f}" for m, s in case["ndcg_at_10"].items() if m != "quanyu")
        lines.append(f"  {case['dataset']:<16} cutoff q{case['cutoff_quantile']}: quanyu {case['ndcg_at_10']['quanyu']:.3f} "
                     f"best {case['best_peer']} → ratio {case['ratio_to_best_peer']:.3f}, difference "
                     f"{case['difference_95ci']}  ({peers})")
    return lines
