"""Which open table format the curated zone becomes (issue 24): Apache Iceberg through pyiceberg's
SQL catalog (SQLite here, PostgreSQL in production) against Delta Lake through deltalake, on the
same curated days of a merged lake, measured in the same run.

What the merge needs from a format, and what is measured for each:
- a merged day committed for every curated table (one commit per table per day: neither format
  commits several tables atomically; the lake's own day marker records each table's snapshot);
- a day merged again replacing exactly that day (idempotent re-merge: overwrite by predicate);
- two writers appending to one table at once (a retrain and a backfill): commits lost or refused;
- time travel: a table read as it was at an earlier snapshot or version, exactly;
- a full read; files and bytes written; what the library adds to the install.

Run from the repository with an environment that has both libraries (deltalake is not in Quanyu's):
    PYTHONPATH=. python -m benchmarks.table_formats --lake LAKE --out FOLDER [--days 60]
    python -m benchmarks.table_formats --lake LAKE --out FOLDER --s3   # on moto's S3 server (moto[server], boto3)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import statistics
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

WRITERS, COMMITS_EACH = 2, 8
# deltalake's options for S3 writes beyond the endpoint and keys (--delta-s3-option KEY=VALUE):
# without a lock or conditional writes delta-rs refuses concurrent-unsafe writes to S3
DELTA_S3_OPTIONS: dict[str, str] = {}
# Iceberg at its best for a table appended to daily: manifests merged as they accumulate (else
# every commit lists one more manifest) and old metadata files deleted (else each commit writes
# the whole snapshot history again and keeps every earlier copy: 110 MB after 240 days of the
# tiny lake, for 11 MB of data)
ICEBERG_PROPERTIES = {"commit.manifest-merge.enabled": "true", "write.metadata.delete-after-commit.enabled": "true",
                      "write.metadata.previous-versions-max": "10"}


def curated_days(lake: Path, days: int) -> tuple[list[str], dict[str, dict[str, pa.Table]], dict[str, pa.Table]]:
    """The last `days` days of every curated table partitioned by day (table → day → rows, with
    `dt`), and the tables that are not partitioned, as the lake's latest commit shows them (read
    through Quanyu's own reader: the lake's curated zone is itself Iceberg now)."""
    from lake.store import Lake

    source = Lake(lake)
    record = source.tables.commit_record()
    if record is None:
        raise SystemExit(f"{lake} has no curated tables: merge it first (quanyu data merge --lake {lake})")
    daily: dict[str, dict[str, pa.Table]] = {}
    whole: dict[str, pa.Table] = {}
    for name in sorted(record.snapshots):
        held = source.partitions("curated", name)
        if not held:
            whole[name] = _plain(source.read("curated", name))
            continue
        daily[name] = {d.isoformat(): _plain(source.read("curated", name, d)) for d in held[-days:]}
    days_seen = sorted({d for per_day in daily.values() for d in per_day})
    return days_seen, daily, whole


def _plain(table: pa.Table) -> pa.Table:
    """Dictionary columns decoded; timestamps with a zone in UTC (Iceberg's timestamptz is UTC and
    pyiceberg refuses another zone: the lake's `ts` is in the brand's zone, which settings.yaml
    keeps). Both formats get the same rows."""
    def plain(column):
        if pa.types.is_dictionary(column.type):
            return pc.cast(column, column.type.value_type)
        if pa.types.is_timestamp(column.type) and column.type.tz not in (None, "UTC"):
            return pc.cast(column, pa.timestamp(column.type.unit, tz="UTC"))
        return column

    return pa.table([plain(c) for c in table.columns], names=table.column_names)


@dataclass(frozen=True)
class Place:
    """Where a format's tables go: a local folder, or a prefix of a bucket on an S3-protocol
    server (`endpoint`: moto's server on loopback here). Picklable, for the concurrent writers."""

    local: str  # the catalog's SQLite file (and, without an endpoint, the tables) live here
    endpoint: str | None = None
    bucket: str = "quanyu"
    delta_extra: tuple[tuple[str, str], ...] = ()  # DELTA_S3_OPTIONS, carried to the writer processes

    def uri(self, *parts: str) -> str:
        if self.endpoint is None:
            return str(Path(self.local, *parts))
        return "s3://" + "/".join([self.bucket, Path(self.local).name, *parts])

    def delta_options(self) -> dict[str, str]:
        if self.endpoint is None:
            return {}
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "quanyu", "AWS_SECRET_ACCESS_KEY": "quanyu",
                "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true", **dict(self.delta_extra)}

    def iceberg_properties(self) -> dict[str, str]:
        if self.endpoint is None:
            return {}
        return {"s3.endpoint": self.endpoint, "s3.access-key-id": "quanyu", "s3.secret-access-key": "quanyu",
                "s3.region": "us-east-1"}

    def size(self) -> tuple[int, int]:
        """Files and bytes written."""
        if self.endpoint is None:
            files = [p for p in Path(self.local).rglob("*") if p.is_file() and p.name != "catalog.db"]
            return len(files), sum(p.stat().st_size for p in files)
        import boto3

        s3 = boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="quanyu",
                          aws_secret_access_key="quanyu", region_name="us-east-1")
        count = total = 0
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=Path(self.local).name + "/"):
            for item in page.get("Contents", []):
                count, total = count + 1, total + item["Size"]
        return count, total


def installed_size(*distributions: str) -> int:
    """Bytes the distributions (not their dependencies) put into site-packages."""
    total = 0
    for name in distributions:
        for f in metadata.distribution(name).files or []:
            path = Path(f.locate())
            if path.is_file():
                total += path.stat().st_size
    return total


# --- Iceberg ---------------------------------------------------------------------------------------

class Iceberg:
    name = "iceberg (pyiceberg SQL catalog on SQLite)"

    def __init__(self, place: Place) -> None:
        from pyiceberg.catalog.sql import SqlCatalog

        warehouse = place.uri() if place.endpoint else Path(place.local).as_uri()
        self.catalog = SqlCatalog("quanyu", uri=f"sqlite:///{Path(place.local) / 'catalog.db'}", warehouse=warehouse,
                                  **place.iceberg_properties())
        self.catalog.create_namespace_if_not_exists("curated")

    def _table(self, name: str, schema: pa.Schema, by_day: bool):
        from pyiceberg.transforms import IdentityTransform

        ident = f"curated.{name}"
        if self.catalog.table_exists(ident):
            return self.catalog.load_table(ident)
        table = self.catalog.create_table(ident, schema=schema, properties=ICEBERG_PROPERTIES)
        if by_day:
            field = table.schema().find_field("dt")
            with table.update_spec() as spec:
                spec.add_field(field.name, IdentityTransform(), "dt")
        return self.catalog.load_table(ident)

    def append(self, name: str, rows: pa.Table, by_day: bool = True) -> None:
        self._table(name, rows.schema, by_day).append(rows)

    def replace_day(self, name: str, day: str, rows: pa.Table) -> None:
        from pyiceberg.expressions import EqualTo

        self._table(name, rows.schema, True).overwrite(rows, overwrite_filter=EqualTo("dt", day))

    def replace(self, name: str, rows: pa.Table) -> None:
        self._table(name, rows.schema, False).overwrite(rows)

    def version(self, name: str):
        return self.catalog.load_table(f"curated.{name}").current_snapshot().snapshot_id

    def read(self, name: str, version=None) -> pa.Table:
        table = self.catalog.load_table(f"curated.{name}")
        return table.scan(snapshot_id=version).to_arrow()


# --- Delta -----------------------------------------------------------------------------------------

class Delta:
    name = "delta (deltalake)"

    def __init__(self, place: Place) -> None:
        self.place = place
        self.options = place.delta_options()

    def append(self, name: str, rows: pa.Table, by_day: bool = True) -> None:
        from deltalake import write_deltalake

        write_deltalake(self.place.uri(name), rows, mode="append", partition_by=["dt"] if by_day else None,
                        storage_options=self.options)

    def replace_day(self, name: str, day: str, rows: pa.Table) -> None:
        from deltalake import write_deltalake

        write_deltalake(self.place.uri(name), rows, mode="overwrite", predicate=f"dt = '{day}'",
                        partition_by=["dt"], storage_options=self.options)

    def replace(self, name: str, rows: pa.Table) -> None:
        from deltalake import write_deltalake

        write_deltalake(self.place.uri(name), rows, mode="overwrite", storage_options=self.options)

    def version(self, name: str):
        from deltalake import DeltaTable

        return DeltaTable(self.place.uri(name), storage_options=self.options).version()

    def read(self, name: str, version=None) -> pa.Table:
        from deltalake import DeltaTable

        table = DeltaTable(self.place.uri(name), version=version, storage_options=self.options)
        return pa.table(table.to_pyarrow_dataset().to_table())


FORMATS = {"iceberg": Iceberg, "delta": Delta}


def _concurrent_writer(kind: str, place: Place, rows: pa.Table, results, start) -> None:
    """One of WRITERS processes appending COMMITS_EACH times to one table, together."""
    fmt = FORMATS[kind](place)
    start.wait()
    ok, refused = 0, []
    for _ in range(COMMITS_EACH):
        try:
            fmt.append("contended", rows)
            ok += 1
        except Exception as exc:  # the commit lost a race the library did not resolve
            refused.append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
    results.put((ok, refused))


def measure(kind: str, folder: Path, days: list[str], daily: dict, whole: dict, endpoint: str | None = None) -> dict:
    root = folder / kind
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    place = Place(str(root), endpoint, delta_extra=tuple(DELTA_S3_OPTIONS.items()))
    fmt = FORMATS[kind](place)
    out: dict = {"format": fmt.name, "store": "S3 protocol (moto server, loopback)" if endpoint else "local disk"}

    # one commit per table for each merged day, then the undated tables replaced
    per_day, versions = [], []
    for day in days:
        started = time.perf_counter()
        for name, parts in daily.items():
            if day in parts:
                fmt.append(name, parts[day])
        per_day.append(time.perf_counter() - started)
        versions.append({name: fmt.version(name) for name in daily if day in daily[name]})
    for name, rows in whole.items():
        fmt.replace(name, rows)
    commits = sum(1 for parts in daily.values() for day in days if day in parts)
    out["commit_day_s_median"] = round(statistics.median(per_day), 4)
    out["commit_table_s_median"] = round(statistics.median(per_day) / max(1, len(daily)), 4)
    out["commits"] = commits

    # a day merged again: exactly that day replaced, the rest untouched
    name = max(daily, key=lambda n: sum(t.num_rows for t in daily[n].values()))
    day = days[len(days) // 2]
    before = fmt.read(name).num_rows
    started = time.perf_counter()
    fmt.replace_day(name, day, daily[name][day])
    out["replace_day_s"] = round(time.perf_counter() - started, 4)
    out["replace_day_exact"] = fmt.read(name).num_rows == before

    # time travel: the table as it was after the first day's commit
    first = versions[0][name]
    started = time.perf_counter()
    old = fmt.read(name, first)
    out["time_travel_s"] = round(time.perf_counter() - started, 4)
    out["time_travel_exact"] = old.num_rows == daily[name][days[0]].num_rows

    started = time.perf_counter()
    full = fmt.read(name)
    out["full_read_s"] = round(time.perf_counter() - started, 4)
    out["table"], out["rows"] = name, full.num_rows
    out["files"], out["bytes"] = place.size()

    # two writers at once on one table
    sample = daily[name][days[-1]]
    fmt.append("contended", sample)  # the table exists before the race
    ctx = multiprocessing.get_context("spawn")
    results, start = ctx.Queue(), ctx.Event()
    workers = [ctx.Process(target=_concurrent_writer, args=(kind, place, sample, results, start))
               for _ in range(WRITERS)]
    for w in workers:
        w.start()
    time.sleep(1.0)  # both processes imported their library
    started = time.perf_counter()
    start.set()
    got = [results.get(timeout=600) for _ in workers]
    for w in workers:
        w.join(60)
    out["concurrent_s"] = round(time.perf_counter() - started, 3)
    out["concurrent_committed"] = sum(ok for ok, _ in got)
    out["concurrent_refused"] = sum(len(r) for _, r in got)
    out["concurrent_refusals"] = sorted({r for _, refused in got for r in refused})[:3]
    out["concurrent_rows_exact"] = fmt.read("contended").num_rows == sample.num_rows * (1 + out["concurrent_committed"])
    return out


def s3_server(folder: Path):
    """moto's S3-protocol server on a free loopback port, with the bucket made; (process, endpoint)."""
    import boto3

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=open(folder / "moto.log", "w"), stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="quanyu", aws_secret_access_key="quanyu",
                      region_name="us-east-1")
    deadline = time.monotonic() + 60
    while True:
        try:
            s3.create_bucket(Bucket="quanyu")
            return server, endpoint
        except Exception:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise
            time.sleep(0.3)


def main(lake: Path, folder: Path, days: int, s3: bool = False) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    chosen, daily, whole = curated_days(lake, days)
    report = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
              "lake": str(lake), "days": len(chosen), "tables_by_day": sorted(daily), "tables_whole": sorted(whole),
              "rows": sum(t.num_rows for parts in daily.values() for t in parts.values()),
              "versions": {d: metadata.version(d) for d in ("pyiceberg", "deltalake", "pyarrow")},
              "installed_bytes": {"pyiceberg": installed_size("pyiceberg"),
                                  "pyiceberg_with_sql_deps": installed_size("pyiceberg", "sqlalchemy", "pyroaring",
                                                                            "mmh3", "strictyaml", "fsspec"),
                                  "deltalake": installed_size("deltalake"),
                                  "deltalake_with_deps": installed_size("deltalake", "arro3-core")},
              "results": []}
    server, endpoint = s3_server(folder) if s3 else (None, None)
    report["delta_s3_options"] = DELTA_S3_OPTIONS if s3 else None
    try:
        for kind in FORMATS:
            try:
                result = measure(kind, folder, chosen, daily, whole, endpoint)
            except Exception as exc:  # a format that cannot do it here: that is the finding
                result = {"format": kind, "failed": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
            print(json.dumps(result), flush=True)
            report["results"].append(result)
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
    (folder / "table_formats.json").write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lake", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--s3", action="store_true", help="the tables on moto's S3-protocol server (loopback)")
    parser.add_argument("--delta-s3-option", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    DELTA_S3_OPTIONS.update(dict(o.split("=", 1) for o in args.delta_s3_option))
    print(json.dumps(main(args.lake, args.out, args.days, args.s3), indent=1), file=sys.stderr)
