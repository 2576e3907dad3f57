"""Job: merge the raw lake into curated tables, incrementally and idempotently.

Steps:
1. load the dimension tables and build the OneID index (ambiguous channel ids dropped);
2. pick the days to merge: the given dates, else every raw day whose input files changed since
   the last merge (a manifest of file fingerprints in curated/_manifest.json);
3. without an assortment table, collect each day's sold (store, SKU) pairs to infer ranging;
4. merge each day as a Ray task: read that day's raw lines, write that day's curated partitions
   (sales_lines, demand_daily, interactions, store_daily) atomically;
5. drop curated days whose raw days are gone (quarantined or deleted), update the manifest;
6. rebuild store_performance (one row per offline store) from store_daily.

Dimension tables are applied as they are at merge time; `rebuild` re-merges every day (for
instance after the identities table gained links).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import time
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict

from jobs.progress import as_completed
from lake.contract import (
    ASSORTMENT, DEFAULT_PLATFORM, FACT_TABLES, IDENTITIES, PRICES, PRODUCTS, PROMOTIONS, STORES, complete, empty,
)
from lake.merge import RANGING_WINDOW_DAYS, Dimensions, merge_day, store_performance
from lake.oneid import identity_index
from lake.store import Lake, LakeError

MERGE_VERSION = 1  # bump when the merge's output changes, so every day is merged again
CURATED_DAILY = ("sales_lines", "demand_daily", "interactions", "store_daily")


class MergeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dates: list[dt.date] | None = None
    rebuild: bool = False


@dataclass
class DayStats:
    day: dt.date
    fingerprint: list
    lines: int = 0
    raw_units_net: int = 0
    curated_units_net: int = 0
    demand_rows: int = 0
    resolution: dict[str, int] = field(default_factory=dict)
    linked: dict[str, list[int]] = field(default_factory=dict)  # source (platform or pos) → [lines, linked to a member]
    error: str | None = None


@dataclass
class MergeResult:
    lake: str
    merged: list[dt.date] = field(default_factory=list)
    skipped: int = 0
    removed: list[dt.date] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    lines: int = 0
    raw_units_net: int = 0
    curated_units_net: int = 0
    demand_rows: int = 0
    resolution: dict[str, int] = field(default_factory=dict)
    identity_conflicts: int = 0
    stores_with_performance: int = 0
    seconds: float = 0.0
    linked: dict[str, list[int]] = field(default_factory=dict)  # source → [lines, linked to a member]

    @property
    def warnings(self) -> list[str]:
        """Sales sources none of whose lines were linked to a member: a data bank that does not
        reach that channel (its identities' channel differs from the shop's platform, say)."""
        return [f"none of the {n:,} {s} lines merged was linked to a member: raw/identities has no "
                f"channel '{s}' ids of these buyers{' (online shops link through their platform)' if s != 'pos' else ''}; "
                "the matching family learns from linked lines only"
                for s, (n, k) in sorted(self.linked.items()) if n and not k]

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def load_dimensions(lake: Lake) -> Dimensions:
    """The typed dimension tables. Raises LakeError naming what is missing or malformed."""
    def read(spec, required: bool = True, absent: pa.Table | None = None) -> pa.Table | None:
        if not lake.files("raw", spec.name):
            if required:
                raise LakeError(f"raw/{spec.name} is missing; generate or load it, then run quanyu data validate")
            return absent
        try:
            return complete(lake.read("raw", spec.name), spec)
        except (KeyError, pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise LakeError(f"raw/{spec.name} does not match the contract ({exc}); run quanyu data validate") from None

    # a brand without promotions or a data bank has none: empty tables, every line a guest's
    return Dimensions(stores=read(STORES), products=read(PRODUCTS),
                      promotions=read(PROMOTIONS, required=False, absent=empty(PROMOTIONS)),
                      prices=read(PRICES, required=False), assortment=read(ASSORTMENT, required=False),
                      identities=identity_index(read(IDENTITIES, required=False, absent=empty(IDENTITIES))),
                      timezone=lake.settings().timezone)


def day_fingerprint(lake: Lake, day: dt.date) -> list:
    out = []
    for table in FACT_TABLES:
        for path in lake.files("raw", table, day):
            stat = path.stat()
            out.append([table, path.name, stat.st_size, stat.st_mtime_ns])
    return out


def pending_days(lake: Lake) -> list[dt.date]:
    """The raw days an incremental merge would merge now: new days, and days whose files changed
    since they were last merged (a backfill)."""
    manifest = _read_manifest(lake)
    days = sorted(set().union(*(lake.partitions("raw", t) for t in FACT_TABLES)))
    return [d for d in days if manifest["days"].get(d.isoformat()) != day_fingerprint(lake, d)]


def _manifest_path(lake: Lake):
    return lake.table_dir("curated", "_manifest.json")


def _read_manifest(lake: Lake) -> dict:
    path = _manifest_path(lake)
    if not path.exists():
        return {"version": MERGE_VERSION, "days": {}}
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError:
        return {"version": MERGE_VERSION, "days": {}}  # unreadable manifest: merge everything again
    if manifest.get("version") != MERGE_VERSION:
        return {"version": MERGE_VERSION, "days": {}}
    return manifest


def _write_manifest(lake: Lake, manifest: dict) -> None:
    path = _manifest_path(lake)
    tmp = path.with_suffix(".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        # the old manifest stays: days it does not vouch for are merged again next time
        raise LakeError(f"could not record the merge in {path}: {exc.strerror or exc}; free space or fix "
                        "permissions there and merge again") from exc


def _read_day(lake: Lake, table: str, day: dt.date, columns: list[str] | None = None) -> pa.Table | None:
    return lake.read("raw", table, day, columns=columns) if lake.files("raw", table, day) else None


def _sold_pairs(lake: Lake, day: dt.date) -> pa.Table:
    parts = []
    for table in FACT_TABLES:
        data = _read_day(lake, table, day, ["store_id", "sku_id", "is_refund"])
        if data is not None:
            parts.append(data.filter(pc.invert(data["is_refund"])).select(["store_id", "sku_id"]))
    if not parts:
        return pa.table({"store_id": pa.array([], pa.string()), "sku_id": pa.array([], pa.string())})
    return pa.concat_tables(parts).group_by(["store_id", "sku_id"]).aggregate([])


def _merge_one(lake: Lake, day: dt.date, dims: Dimensions, recent_pairs: pa.Table | None,
               fingerprint: list) -> DayStats:
    stats = DayStats(day, fingerprint)
    try:
        online = _read_day(lake, "online_orders", day)
        pos = _read_day(lake, "pos_transactions", day)
        curated = merge_day(day, online, pos, dims, recent_pairs)
    except (KeyError, pa.ArrowException, LakeError, OSError) as exc:
        stats.error = (f"dt={day} could not be merged: {type(exc).__name__}: {str(exc)[:200]}; "
                       "run quanyu data validate --quarantine")
        return stats
    try:  # the day's four tables together: all of them or, on a failed write, none
        lake.write_day("curated", {name: getattr(curated, name) for name in CURATED_DAILY}, day)
    except LakeError as exc:
        stats.error = str(exc)
        return stats
    stats.lines = curated.sales_lines.num_rows
    stats.raw_units_net = sum(int(pc.sum(t["quantity"]).as_py() or 0) for t in (online, pos) if t is not None)
    stats.curated_units_net = int(pc.sum(curated.demand_daily["units_net"]).as_py() or 0)
    stats.demand_rows = curated.demand_daily.num_rows
    counts = pc.value_counts(curated.sales_lines["resolution"]).to_pylist()
    stats.resolution = {c["values"]: int(c["counts"]) for c in counts}
    lines = curated.sales_lines
    source = pc.if_else(pc.equal(lines["channel"], "online"), pc.fill_null(lines["platform"], DEFAULT_PLATFORM), "pos")
    by_source = pa.table({"source": source, "linked": pc.is_valid(lines["member_id"]).cast(pa.int64())}) \
        .group_by("source").aggregate([("linked", "count"), ("linked", "sum")])
    stats.linked = {s: [int(n), int(k)] for s, n, k in zip(by_source["source"].to_pylist(),
                                                        by_source["linked_count"].to_pylist(),
                                                        by_source["linked_sum"].to_pylist())}
    return stats


def _rebuild_store_performance(lake: Lake, dims: Dimensions) -> int:
    days = lake.partitions("curated", "store_daily")
    if not days:
        return 0
    daily = lake.read_all("curated", "store_daily", days=days)
    sites = lake.read("raw", "candidate_sites") if lake.files("raw", "candidate_sites") else None
    perf = store_performance(daily, dims.stores, sites, lake_end=days[-1])
    lake.write("curated", "store_performance", perf)
    return perf.num_rows


def main(config: MergeConfig, lake: Lake) -> MergeResult:
    """Merge; Ray must be initialised. Raises LakeError when the dimension tables are unusable."""
    import ray

    started = time.monotonic()
    result = MergeResult(lake=str(lake.root))
    dims = load_dimensions(lake)
    result.identity_conflicts = dims.identities.conflicts
    raw_days = sorted(set().union(*(lake.partitions("raw", t) for t in FACT_TABLES)))
    if not raw_days:
        raise LakeError(f"no raw fact partitions under {lake.root / 'raw'}; generate or load data first")
    manifest = _read_manifest(lake) if not config.rebuild else {"version": MERGE_VERSION, "days": {}}

    if config.dates:
        unknown = sorted(set(config.dates) - set(raw_days))
        if unknown:
            raise LakeError(f"no raw data for {', '.join(map(str, unknown))}; raw days run "
                            f"{raw_days[0]} … {raw_days[-1]}")
        todo = sorted(config.dates)
    else:
        todo = pending_days(lake) if not config.rebuild else raw_days
        result.skipped = len(raw_days) - len(todo)

    window: dict[dt.date, pa.Table] = {}
    if dims.assortment is None and todo:
        needed = [d for d in raw_days if todo[0] - dt.timedelta(days=RANGING_WINDOW_DAYS - 1) <= d <= todo[-1]]
        pair_task = ray.remote(_sold_pairs)
        window = dict(zip(needed, ray.get([pair_task.remote(lake, d) for d in needed])))

    def recent(day: dt.date) -> pa.Table | None:
        if dims.assortment is not None:
            return None
        parts = [t for d, t in window.items() if day - dt.timedelta(days=RANGING_WINDOW_DAYS - 1) <= d <= day]
        return pa.concat_tables(parts).group_by(["store_id", "sku_id"]).aggregate([]) if parts else None

    task = ray.remote(_merge_one)
    dims_ref = ray.put(dims)
    refs = [task.remote(lake, day, dims_ref, recent(day), day_fingerprint(lake, day)) for day in todo]
    for stats in as_completed(refs, label="merge days"):
        if stats.error:
            result.failed[stats.day.isoformat()] = stats.error
            manifest["days"].pop(stats.day.isoformat(), None)
            continue
        manifest["days"][stats.day.isoformat()] = stats.fingerprint
        result.merged.append(stats.day)
        result.lines += stats.lines
        result.raw_units_net += stats.raw_units_net
        result.curated_units_net += stats.curated_units_net
        result.demand_rows += stats.demand_rows
        for k, v in stats.resolution.items():
            result.resolution[k] = result.resolution.get(k, 0) + v
        for k, (n, linked) in stats.linked.items():
            total = result.linked.setdefault(k, [0, 0])
            total[0] += n
            total[1] += linked
    result.merged.sort()

    if not config.dates:  # a full pass also retires curated days whose raw days are gone
        raw_set = set(raw_days)
        for day in sorted(set().union(*(lake.partitions("curated", t) for t in CURATED_DAILY)) - raw_set):
            for name in CURATED_DAILY:
                shutil.rmtree(lake.partition_dir("curated", name, day), ignore_errors=True)
            manifest["days"].pop(day.isoformat(), None)
            result.removed.append(day)
    _write_manifest(lake, manifest)
    if result.merged or result.removed or not lake.files("curated", "store_performance"):
        result.stores_with_performance = _rebuild_store_performance(lake, dims)
    result.seconds = round(time.monotonic() - started, 1)
    return result
