"""Job: validate the raw lake against its contract, and optionally quarantine bad partitions.

Steps:
1. read every dimension table (products, stores, …), check its rules, collect the key sets
   that fact lines must refer to;
2. check every fact partition (or the given dates) as a Ray task: each file's rules, duplicate
   keys across the partition's files, an empty partition;
3. find keys repeated across partitions (from 64-bit key hashes);
4. with `quarantine`, move each failing fact partition to quarantine/<run>/ with the report;
   a failing dimension table cannot be quarantined and rejects the run;
5. return the result: 0 clean, 1 rejected, 3 passed after quarantining partitions.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from jobs.progress import as_completed
from lake.contract import DIMENSION_TABLES, FACT_TABLES, RAW_TABLES
from lake.location import read_parquet, task_options
from lake.requirements import readiness
from lake.settings import LakeSettings
from lake.store import Lake
from lake.validate import Violation, check_table, future_partition, key_hashes

EXIT_CLEAN, EXIT_REJECTED, EXIT_QUARANTINED = 0, 1, 3


class ValidateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    quarantine: bool = False
    dates: list[dt.date] | None = None  # None: every partition
    required_dates: list[dt.date] | None = None  # days every fact table in use must have (default: dates)
    today: dt.date | None = None  # for the future_partition rule (default: today in the brand's time zone)


@dataclass
class PartitionCheck:
    table: str
    day: dt.date
    rows: int
    files: int
    violations: list[Violation]
    hashes: np.ndarray  # unique key hashes of the partition


@dataclass
class ValidateResult:
    lake: str
    run_id: str
    violations: list[Violation] = field(default_factory=list)
    rows_checked: dict[str, int] = field(default_factory=dict)
    partitions_checked: dict[str, int] = field(default_factory=dict)
    quarantined: list[dict] = field(default_factory=list)
    rejected: bool = False
    seconds: float = 0.0
    families: dict[str, list[str]] = field(default_factory=dict)  # family → what the lake lacks to train it

    @property
    def exit_code(self) -> int:
        if self.rejected:
            return EXIT_REJECTED
        return EXIT_QUARANTINED if self.quarantined else EXIT_CLEAN

    def to_dict(self) -> dict:
        return {"lake": self.lake, "run_id": self.run_id, "exit_code": self.exit_code,
                "rows_checked": self.rows_checked, "partitions_checked": self.partitions_checked,
                "quarantined": self.quarantined, "families": self.families,
                "violations": [v.to_dict() for v in self.violations]}


def _read_file(path: Path, table: str, lake: Lake) -> tuple[pa.Table | None, Violation | None]:
    try:
        return read_parquet(path), None
    except (pa.ArrowException, OSError) as exc:
        return None, Violation(table, "unreadable", 0,
                               f"not a readable Parquet file ({type(exc).__name__}: {str(exc)[:160]}); "
                               "rewrite or remove it", file=str(path.relative_to(lake.root)))


def _check_dimensions(lake: Lake, settings: LakeSettings) -> tuple[list[Violation], dict[str, set[str]], dict[str, str], dict[str, int]]:
    violations: list[Violation] = []
    tables: dict[str, pa.Table] = {}
    rows: dict[str, int] = {}
    for name in DIMENSION_TABLES:
        spec = RAW_TABLES[name]
        files = lake.files("raw", name)
        if not files:
            if spec.required_table:
                violations.append(Violation(name, "missing_table", 0,
                                            f"required table {name} has no Parquet files under raw/{name}/; every "
                                            "family reads it: write it (see docs/lake.md)"))
            continue
        parts = []
        for path in files:
            data, problem = _read_file(path, name, lake)
            if problem:
                violations.append(problem)
            elif data is not None:
                parts.append(data)
        if parts:
            try:
                tables[name] = pa.concat_tables(parts, promote_options="permissive")
            except pa.ArrowInvalid as exc:
                violations.append(Violation(name, "type", sum(p.num_rows for p in parts),
                                            f"the files of {name} disagree on column types: {exc}"))
    references = {
        f"{t}.{c}": set(tables[t].column(c).drop_null().to_pylist())
        for t, c in (("products", "sku_id"), ("stores", "store_id"), ("members", "member_id"),
                     ("promotions", "promo_id"))
        if t in tables and c in tables[t].column_names and pa.types.is_string(tables[t].column(c).type)
    }
    store_channels = {}
    if "stores" in tables and {"store_id", "channel"} <= set(tables["stores"].column_names):
        store_channels = dict(zip(tables["stores"].column("store_id").to_pylist(),
                                  tables["stores"].column("channel").to_pylist()))
    for name, data in tables.items():
        rows[name] = data.num_rows
        where = str(lake.table_dir("raw", name).relative_to(lake.root))
        for v in check_table(data, RAW_TABLES[name], references=references,
                             max_unit_price=settings.max_unit_price, currency=settings.currency):
            if v.rule == "empty" and not RAW_TABLES[name].required_table:
                continue  # an optional table with no rows: the brand has none of these
            v.file = v.file or where
            violations.append(v)
    return violations, references, store_channels, rows


def _check_partition(lake: Lake, table: str, day: dt.date, references: dict[str, set[str]],
                     store_channels: dict[str, str], settings: LakeSettings | None = None) -> PartitionCheck:
    spec = RAW_TABLES[table]
    settings = settings or LakeSettings()
    violations: list[Violation] = []
    hashes: list[np.ndarray] = []
    rows = 0
    files = lake.files("raw", table, day)
    for path in files:
        data, problem = _read_file(path, table, lake)
        rel = str(path.relative_to(lake.root))
        if problem:
            problem.partition = day.isoformat()
            violations.append(problem)
            continue
        rows += data.num_rows
        found = check_table(data, spec, partition=day, references=references, store_channels=store_channels,
                            timezone=settings.timezone, max_unit_price=settings.max_unit_price,
                            currency=settings.currency)
        for v in found:
            v.file, v.partition = rel, day.isoformat()
        violations += [v for v in found if v.rule != "empty"]
        if data.num_rows and all(k in data.column_names for k in spec.key):
            hashes.append(np.unique(key_hashes(data, spec.key)))
    merged = np.concatenate(hashes) if hashes else np.zeros(0, np.uint64)
    unique, counts = np.unique(merged, return_counts=True)
    if (counts > 1).any():
        violations.append(Violation(table, "duplicate_across_files", int((counts > 1).sum()),
                                    "the same key appears in two files of this partition; remove the copy",
                                    partition=day.isoformat(),
                                    file=str(lake.partition_dir("raw", table, day).relative_to(lake.root))))
    if rows == 0:
        violations.append(Violation(table, "empty_partition", 0,
                                    "the partition has no rows; write the day's lines or remove the folder",
                                    partition=day.isoformat(),
                                    file=str(lake.partition_dir("raw", table, day).relative_to(lake.root))))
    return PartitionCheck(table, day, rows, len(files), violations, unique)


def _cross_partition_duplicates(lake: Lake, checks: list[PartitionCheck]) -> list[Violation]:
    """A key in two partitions: the later partition is flagged, naming the earliest one. One sort
    over every partition's key hashes (each partition's hashes are already unique)."""
    out = []
    for table in FACT_TABLES:
        mine = sorted((c for c in checks if c.table == table and c.hashes.size), key=lambda c: c.day)
        if len(mine) < 2:
            continue
        hashes = np.concatenate([c.hashes for c in mine])
        owner = np.concatenate([np.full(c.hashes.size, i) for i, c in enumerate(mine)])
        order = np.lexsort((owner, hashes))  # by hash, then by partition (earliest first)
        hashes, owner = hashes[order], owner[order]
        repeat = np.flatnonzero(hashes[1:] == hashes[:-1]) + 1  # every copy after the first
        if not repeat.size:
            continue
        first = np.searchsorted(hashes, hashes[repeat], side="left")  # index of the earliest copy
        for part in np.unique(owner[repeat]):
            mask = owner[repeat] == part
            earlier = sorted({mine[i].day for i in owner[first[mask]]})
            check = mine[part]
            out.append(Violation(table, "duplicate_across_partitions", int(mask.sum()),
                                 f"keys already present in dt={', dt='.join(d.isoformat() for d in earlier[:3])}; "
                                 "a line belongs to one partition — remove the copy",
                                 partition=check.day.isoformat(),
                                 file=str(lake.partition_dir("raw", table, check.day).relative_to(lake.root))))
    return out


def main(config: ValidateConfig, lake: Lake) -> ValidateResult:
    """Validate (and optionally quarantine). Ray must be initialised for the fact partitions."""
    import ray

    started = time.monotonic()
    result = ValidateResult(lake=str(lake.root), run_id=dt.datetime.now().strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6])
    if not (lake.root / "raw").is_dir():
        result.violations.append(Violation("*", "missing_lake", 0,
                                           f"no raw/ folder under {lake.root}; generate a lake "
                                           "(quanyu data generate) or point --lake at yours"))
        result.rejected = True
        return result
    try:
        settings = lake.settings()
        latest = settings.latest_allowed_day(config.today)
    except ValueError as exc:  # settings.yaml itself is wrong: nothing can be judged against it
        result.violations.append(Violation("settings", "settings", 0, str(exc), file="settings.yaml"))
        result.rejected = True
        return result
    dim_violations, references, store_channels, dim_rows = _check_dimensions(lake, settings)
    result.violations += dim_violations
    result.rows_checked.update(dim_rows)
    result.families = readiness({t for t, n in dim_rows.items() if n} | {t for t in FACT_TABLES
                                                                           if lake.partitions("raw", t)})
    task = ray.remote(_check_partition).options(**task_options(lake.root))  # a lake on a store: its keys go along
    refs_ref, channels_ref = ray.put(references), ray.put(store_channels)
    wanted = set(config.dates) if config.dates else None
    required = set(config.required_dates if config.required_dates is not None else config.dates or [])
    refs, future = [], []
    for table in FACT_TABLES:
        days = lake.partitions("raw", table)
        # a channel the brand does not have (no partition at all) is not expected on any day
        for day in sorted(required - set(days)) if days else []:
            result.violations.append(Violation(table, "missing_partition", 0,
                                               f"no partition dt={day} under raw/{table}/; write the day's data",
                                               partition=day.isoformat()))
        if wanted is not None:
            days = [d for d in days if d in wanted]
        future += [v for v in (future_partition(table, d, latest) for d in days) if v is not None]
        refs += [task.remote(lake, table, day, refs_ref, channels_ref, settings) for day in days]
    for v in future:
        v.file = str(lake.partition_dir("raw", v.table, dt.date.fromisoformat(v.partition)).relative_to(lake.root))
    result.violations += future
    checks = list(as_completed(refs, label="validate partitions")) if refs else []
    if wanted is not None and checks:
        # duplicates against the partitions not re-validated: compare with their key hashes too
        others = [task.remote(lake, t, d, {}, {}, settings) for t in FACT_TABLES
                  for d in lake.partitions("raw", t) if d not in wanted]
        context = ray.get(others)
        dupes = [v for v in _cross_partition_duplicates(lake, context + checks)
                 if v.partition and dt.date.fromisoformat(v.partition) in wanted]
    else:
        dupes = _cross_partition_duplicates(lake, checks)
    for check in checks:
        result.rows_checked[check.table] = result.rows_checked.get(check.table, 0) + check.rows
        result.partitions_checked[check.table] = result.partitions_checked.get(check.table, 0) + 1
        result.violations += check.violations
    result.violations += dupes

    fact_failures = sorted({(v.table, v.partition) for v in result.violations
                            if v.table in FACT_TABLES and v.partition and v.rule != "missing_partition"})
    blocking = [v for v in result.violations if v.table not in FACT_TABLES or v.rule == "missing_partition"]
    if config.quarantine and fact_failures:
        rows_of = {(c.table, c.day.isoformat()): c.rows for c in checks}
        target_root = lake.root / "quarantine" / result.run_id
        for table, day in fact_failures:
            source = lake.partition_dir("raw", table, dt.date.fromisoformat(day))
            target = target_root / table / f"dt={day}"
            if source.exists():
                lake.move_to(source, target)
                result.quarantined.append({"table": table, "partition": day, "rows": rows_of.get((table, day), 0),
                                           "to": str(target.relative_to(lake.root))})
        result.rejected = bool(blocking)
        target_root.mkdir(parents=True, exist_ok=True)
        (target_root / "report.json").write_text(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        result.rejected = bool(result.violations)
    result.seconds = round(time.monotonic() - started, 1)
    return result
