"""Job: merge the raw lake into curated tables, incrementally and idempotently.

Steps:
1. load the dimension tables and build the OneID index (ambiguous channel ids dropped);
2. pick the days to merge: the given dates, else every raw day whose input files changed since
   the last merge (a manifest of file fingerprints, kept in the lake's commits);
3. without an assortment table, collect each day's sold (store, SKU) pairs to infer ranging;
4. merge each day as a Ray task: read that day's raw lines, write that day's rows of the curated
   tables (sales_lines, demand_daily, interactions, store_daily) as new data files;
5. commit (lake/tables.py): in each table the merged days' rows give way to the new files, and
   curated days whose raw days are gone (quarantined or deleted) are dropped; store_performance
   (one row per offline store) is rebuilt from store_daily; one lake commit records every table's
   snapshot and the manifest, so readers see all of the merge or none of it.

Dimension tables are applied as they are at merge time; `rebuild` re-merges every day (for
instance after the identities table gained links).
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict

from jobs.progress import as_completed
from lake.contract import (
    ASSORTMENT, DEFAULT_PLATFORM, FACT_TABLES, IDENTITIES, PRICES, PRODUCTS, PROMOTIONS, STORES, complete, empty,
)
from lake.location import lake_root, task_options
from lake.merge import RANGING_WINDOW_DAYS, Dimensions, merge_day, store_performance
from lake.oneid import identity_index
from lake.store import Lake, LakeError
from lake.tables import Staged, TableError

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
    staged: list[Staged] = field(default_factory=list)  # the day's new data files, one per curated table


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
    commit: int | None = None  # the lake commit the merge made; None when it changed nothing
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


def _read_manifest(lake: Lake) -> dict:
    """The fingerprints of the raw days the lake's latest commit holds merged."""
    record = lake.tables.commit_record()
    manifest = record.manifest if record else {}
    if manifest.get("version") != MERGE_VERSION:  # an older merge's output: merge everything again
        return {"version": MERGE_VERSION, "days": {}}
    return manifest


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
    try:  # the day's four tables, as files the driver's commit adds: all of them or none
        for name in CURATED_DAILY:
            stats.staged.append(lake.tables.stage(name, day, getattr(curated, name)))
    except OSError as exc:
        for item in stats.staged:
            lake_root(item.path).unlink(missing_ok=True)  # a local path or a URI on the store
        stats.staged = []
        stats.error = (f"could not write curated dt={day} under {lake.root}: {exc.strerror or exc}; no table was "
                       "changed — free space or fix permissions there, then run again")
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


def _store_performance(lake: Lake, dims: Dimensions, changes) -> pa.Table | None:
    """store_performance from store_daily as the commit being made has it."""
    daily = changes.read("store_daily")
    if daily is None or not daily.num_rows:
        return None
    sites = lake.read("raw", "candidate_sites") if lake.files("raw", "candidate_sites") else None
    return store_performance(daily, dims.stores, sites, lake_end=pc.max(daily["dt"]).as_py())


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

    travel = task_options(lake.root)  # a lake on a store: its endpoint and keys go with the tasks
    window: dict[dt.date, pa.Table] = {}
    if dims.assortment is None and todo:
        needed = [d for d in raw_days if todo[0] - dt.timedelta(days=RANGING_WINDOW_DAYS - 1) <= d <= todo[-1]]
        pair_task = ray.remote(_sold_pairs).options(**travel)
        window = dict(zip(needed, ray.get([pair_task.remote(lake, d) for d in needed])))

    def recent(day: dt.date) -> pa.Table | None:
        if dims.assortment is not None:
            return None
        parts = [t for d, t in window.items() if day - dt.timedelta(days=RANGING_WINDOW_DAYS - 1) <= d <= day]
        return pa.concat_tables(parts).group_by(["store_id", "sku_id"]).aggregate([]) if parts else None

    task = ray.remote(_merge_one).options(**travel)
    dims_ref = ray.put(dims)
    refs = [task.remote(lake, day, dims_ref, recent(day), day_fingerprint(lake, day)) for day in todo]
    staged: list[Staged] = []
    for stats in as_completed(refs, label="merge days"):
        staged += stats.staged
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
        result.removed = sorted(set().union(*(lake.partitions("curated", t) for t in CURATED_DAILY)) - raw_set)
        for day in result.removed:
            manifest["days"].pop(day.isoformat(), None)
    if result.merged or result.removed or not lake.has("curated", "store_performance"):
        _commit(lake, dims, result, staged, manifest)
    result.seconds = round(time.monotonic() - started, 1)
    return result


def _commit(lake: Lake, dims: Dimensions, result: MergeResult, staged: list[Staged], manifest: dict) -> None:
    """One lake commit for the whole merge: each daily table's merged and removed days, then
    store_performance rebuilt from the new store_daily. Raises LakeError when it cannot be made
    (the lake's readers still see it as it was)."""
    note = (f"merge: {len(result.merged)} day(s) merged"
            + (f" ({result.merged[0]} … {result.merged[-1]})" if result.merged else "")
            + (f", {len(result.removed)} removed" if result.removed else ""))
    try:
        with lake.tables.committing(note) as changes:
            for name in CURATED_DAILY:
                changes.replace_days(name, [s for s in staged if s.table == name], result.removed)
            perf = _store_performance(lake, dims, changes)
            if perf is not None:
                changes.replace("store_performance", perf)
                result.stores_with_performance = perf.num_rows
            changes.manifest = manifest
        result.commit = changes.committed.id
    except TableError as exc:
        result.merged, result.commit = [], None
        raise LakeError(str(exc)) from None
