"""The curated zone as Apache Iceberg tables in a SQL catalog, and the lake's own commits.

Why Iceberg through pyiceberg's SQL catalog (measured against Delta Lake in BENCHMARKS.md, "The
curated zone's table format"; reasons in docs/lake.md): its state lives in a SQL database —
SQLite beside the lake by default, the PostgreSQL server MLflow uses in production
(`QUANYU_CATALOG_URI`) — so the lake's record of which snapshot of each table a merged day made
visible is one row in that same database, written in one transaction.

Neither format commits several tables at once, so a day's four tables are made visible together
by the lake's commit: the merge writes every table's data files (in its Ray tasks, in parallel),
commits each table (one Iceberg snapshot each), and then adds one row to `quanyu_lake_commits`
naming each table's snapshot and the merge's manifest. Readers read every table at the snapshots
of the latest lake commit (or of the commit they are pinned to: `Lake(root, commit=N)`), so a
merge that stops between two table commits shows nothing of itself; the next merge does its days
again (its manifest never recorded them) on top.

Data files are written by the merge's tasks into `curated/<table>/data/dt=YYYY-MM-DD/` and added
to the table by path; snapshots are kept (time travel is how a model version's data is read
again), so replaced days' files stay until someone expires snapshots.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from lake.location import Location, copy_file, lake_root, read_files, write_parquet
from lake.errors import LakeError

CATALOG_ENV = "QUANYU_CATALOG_URI"  # a SQLAlchemy URL; default: sqlite:///<lake>/curated/catalog.db
CATALOG_FILE = "catalog.db"  # in the curated zone's folder: the zone and its catalog travel together
# a lake on an object store cannot hold a SQLite file: its catalog defaults to one under
# QUANYU_HOME (the same default as jobs/runtime.py), named after the lake's URI
HOME_ENV, HOME_DEFAULT = "QUANYU_HOME", ".quanyu"
NAMESPACE = "curated"
COMMITS_TABLE = "quanyu_lake_commits"
ARROW_SCHEMA = "quanyu.arrow-schema"  # table property: the Arrow schema a reader gets back
# a table appended to daily: manifests merged as they accumulate, old metadata files deleted
# (measured: 110 -> 25 MB over the tiny lake's 240 days); snapshots themselves are kept
PROPERTIES = {"commit.manifest-merge.enabled": "true", "write.metadata.delete-after-commit.enabled": "true",
              "write.metadata.previous-versions-max": "10"}


class TableError(LakeError):
    """A curated table cannot be read or written; the message says what to do."""


@dataclass(frozen=True)
class Staged:
    """A data file a merge task wrote for one day of one table, not yet part of the table."""

    table: str
    day: dt.date
    path: str
    schema: bytes  # the Arrow schema of the rows as merged (zones, dictionaries), serialized


@dataclass(frozen=True)
class Commit:
    """One of the lake's commits: the snapshot of each curated table it made visible."""

    id: int
    at: str
    snapshots: dict[str, int]
    manifest: dict = field(default_factory=dict, repr=False)
    note: str = ""


class Tables:
    """The curated tables of the lake rooted at `root`, as of its latest commit or of `commit`."""

    def __init__(self, root: Path | Location, commit: int | None = None) -> None:
        self.root, self.pinned = root, commit

    # --- the catalog ------------------------------------------------------------------------
    @property
    def uri(self) -> str:
        return os.environ.get(CATALOG_ENV) or f"sqlite:///{self._file}"

    @property
    def _file(self) -> Path:
        if isinstance(self.root, Location):
            home = Path(os.environ.get(HOME_ENV, HOME_DEFAULT)).expanduser().resolve()
            return home / "catalogs" / f"{hashlib.sha256(str(self.root).encode()).hexdigest()[:16]}.db"
        return self.root / NAMESPACE / CATALOG_FILE

    @property
    def name(self) -> str:
        """The catalog's name in its database: the lake's own file holds one lake; a shared
        database (QUANYU_CATALOG_URI) tells lakes apart by their root."""
        return f"quanyu:{self.root}" if os.environ.get(CATALOG_ENV) else "quanyu"

    @cached_property
    def catalog(self):
        from pyiceberg.catalog.sql import SqlCatalog

        if not os.environ.get(CATALOG_ENV):
            self._file.parent.mkdir(parents=True, exist_ok=True)
        catalog = SqlCatalog(self.name, uri=self.uri, warehouse=self.root.as_uri(), **_io_properties(self.root))
        catalog.create_namespace_if_not_exists(NAMESPACE)
        return catalog

    @cached_property
    def _commits(self):
        import sqlalchemy as sa

        meta = sa.MetaData()
        table = sa.Table(COMMITS_TABLE, meta,
                         sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
                         sa.Column("lake", sa.String(1024), nullable=False, index=True),
                         sa.Column("committed_at", sa.String(40), nullable=False),
                         sa.Column("snapshots", sa.Text, nullable=False),
                         sa.Column("manifest", sa.Text, nullable=False),
                         sa.Column("note", sa.Text, nullable=False))
        meta.create_all(self.catalog.engine, checkfirst=True)
        return table

    def _exists(self) -> bool:
        """Whether the lake has a catalog at all (without creating one)."""
        return bool(os.environ.get(CATALOG_ENV)) or self._file.exists()

    # --- the lake's commits -----------------------------------------------------------------
    def commit_record(self) -> Commit | None:
        """The lake commit readers see: the pinned one, else the latest; None before any merge.
        Raises TableError for a pinned commit that does not exist."""
        if not self._exists():
            if self.pinned is not None:
                raise TableError(f"lake commit {self.pinned} does not exist: {self.root} has no curated tables yet")
            return None
        import sqlalchemy as sa

        table = self._commits
        query = sa.select(table).where(table.c.lake == self.name)
        query = query.where(table.c.id == self.pinned) if self.pinned is not None else \
            query.order_by(table.c.id.desc()).limit(1)
        with self.catalog.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        if row is None:
            if self.pinned is not None:
                raise TableError(f"lake commit {self.pinned} does not exist in {self.root}'s catalog; "
                                 "`quanyu data commits` lists them")
            return None
        return Commit(row["id"], row["committed_at"], json.loads(row["snapshots"]), json.loads(row["manifest"]),
                      row["note"])

    def history(self) -> list[Commit]:
        """Every lake commit, oldest first."""
        if not self._exists():
            return []
        import sqlalchemy as sa

        table = self._commits
        with self.catalog.engine.connect() as conn:
            rows = conn.execute(sa.select(table).where(table.c.lake == self.name).order_by(table.c.id)).mappings()
            return [Commit(r["id"], r["committed_at"], json.loads(r["snapshots"]), {}, r["note"]) for r in rows]

    # --- reading ------------------------------------------------------------------------------
    def snapshot(self, table: str) -> int | None:
        record = self.commit_record()
        return None if record is None else record.snapshots.get(table)

    def _load(self, table: str):
        return self.catalog.load_table(f"{NAMESPACE}.{table}")

    def days(self, table: str) -> list[dt.date]:
        """The days with rows in `table` as the lake commit shows it; [] when it has none."""
        snapshot = self.snapshot(table)
        return [] if snapshot is None else self._days_at(self._load(table), snapshot)

    @staticmethod
    def _days_at(iceberg, snapshot: int | None) -> list[dt.date]:
        if snapshot is None:
            return []
        parts = iceberg.inspect.partitions(snapshot_id=snapshot)
        if "partition" not in parts.column_names:
            return []
        counts = parts["record_count"].to_pylist()
        return sorted(p["dt"] for p, n in zip(parts["partition"].to_pylist(), counts) if n)

    def stats(self, table: str) -> dict | None:
        """Files, rows and bytes of `table` as the lake commit shows it (its snapshot's summary),
        and the snapshot; None when it has none."""
        snapshot = self.snapshot(table)
        if snapshot is None:
            return None
        summary = self._load(table).snapshot_by_id(snapshot).summary
        return {"files": int(summary["total-data-files"]), "rows": int(summary["total-records"]),
                "bytes": int(summary["total-files-size"]), "snapshot": snapshot}

    def count_rows(self, table: str) -> int:
        snapshot = self.snapshot(table)
        if snapshot is None:
            return 0
        return int(self._load(table).snapshot_by_id(snapshot).summary["total-records"])

    def read(self, table: str, columns: list[str] | None = None, days: list[dt.date] | None = None) -> pa.Table:
        """Rows of `table` as the lake commit shows it (only `days`, only `columns`), with the
        types the merge gave them. Raises TableError when the lake has no such table."""
        snapshot = self.snapshot(table)
        if snapshot is None:
            raise TableError(f"curated/{table} has no data in {self.root}; run quanyu data merge first")
        return self._read_at(table, snapshot, columns, days)

    def _read_at(self, table: str, snapshot: int, columns: list[str] | None, days: list[dt.date] | None) -> pa.Table:
        from pyiceberg.expressions import AlwaysTrue, And, GreaterThanOrEqual, In, LessThanOrEqual

        iceberg = self._load(table)
        schema = _schema_of(iceberg)
        by_day = bool(iceberg.spec().fields)
        if columns:  # a table by day always brings its `dt`
            columns = list(dict.fromkeys([*columns, *(["dt"] if by_day else [])]))
            schema = pa.schema([schema.field(c) for c in columns])
        if days is not None and not days:
            return schema.empty_table()
        fields = tuple(columns) if columns else ("*",)
        # the days' span prunes files by their partition (pyiceberg's `In` over hundreds of days
        # costs a second a read); the exact days are picked below
        where = And(GreaterThanOrEqual("dt", min(days).isoformat()), LessThanOrEqual("dt", max(days).isoformat())) \
            if days is not None and by_day else AlwaysTrue()
        tasks = list(iceberg.scan(row_filter=where, selected_fields=fields, snapshot_id=snapshot).plan_files())
        if not by_day or any(t.delete_files for t in tasks):  # pyiceberg applies filter and deletes itself
            where = In("dt", [d.isoformat() for d in days]) if days is not None else AlwaysTrue()
            rows = iceberg.scan(row_filter=where, selected_fields=fields, snapshot_id=snapshot).to_arrow()
            if by_day:
                rows = rows.take(pc.sort_indices(rows, [("dt", "ascending")]))
            return _as(rows, schema)
        # every data file of a table by day holds one day (the merge stages a file per day, and
        # Iceberg writes a partitioned table file by partition), so the planned files are exactly
        # the rows asked for: read them with pyarrow, days in order, each day's files by name —
        # the same read, the same rows (3x faster than pyiceberg's reader on the tiny lake's
        # demand_daily, 20x with a list of days)
        wanted = None if days is None else set(days)
        tasks = sorted((t for t in tasks if wanted is None or _day_of(t.file) in wanted),
                       key=lambda t: (_day_of(t.file), t.file.file_path))
        if not tasks:
            return schema.empty_table()
        return _as(read_files([_located(t.file.file_path) for t in tasks], _plain_schema(schema)), schema)

    # --- writing ------------------------------------------------------------------------------
    def copy_into(self, target: Tables) -> Commit:
        """The tables as this lake's commit shows them, written as `target`'s next commit (with
        the merge's manifest: a copy of the lake whose raw files kept their times merges nothing
        again). Iceberg tables hold absolute paths, so a lake's folder copied by hand still points
        at the original's files: copy it with this."""
        record = self.commit_record()
        if record is None:
            raise TableError(f"{self.root} has no curated tables to copy; run quanyu data merge first")
        with target.committing(f"copied from {self.root} at commit {record.id}") as changes:
            for name in sorted(record.snapshots):
                iceberg = self._load(name)
                if not iceberg.spec().fields:  # a small table not by day: its rows
                    changes.replace(name, self.read(name))
                    continue
                # a table by day: its data files at the snapshot, copied byte for byte and added
                schema = _schema_of(iceberg).serialize().to_pybytes()
                copied = [Staged(name, _day_of(task.file), str(target._copy_in(name, _day_of(task.file),
                                                                                 task.file.file_path)), schema)
                          for task in iceberg.scan(snapshot_id=record.snapshots[name]).plan_files()]
                changes.replace_days(name, copied, [])
            changes.manifest = record.manifest
        return changes.committed

    def _copy_in(self, table: str, day: dt.date, source: str) -> Path | Location:
        path = self._data_file(table, day)
        copy_file(source, path)
        return path

    def _data_file(self, table: str, day: dt.date) -> Path | Location:
        """A new data file's name in `table`'s folder of `day` (the folder made)."""
        folder = self.root / NAMESPACE / table / "data" / f"dt={day.isoformat()}"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{uuid.uuid4().hex}.parquet"

    def stage(self, table: str, day: dt.date, rows: pa.Table) -> Staged:
        """Write one day's rows of `table` as a new data file (in a merge task); nothing reads it
        until `commit` adds it. Raises OSError when the file cannot be written."""
        path = self._data_file(table, day)
        if "dt" not in rows.column_names:
            rows = rows.append_column("dt", pa.array([day] * rows.num_rows, pa.date32()))
        try:
            write_parquet(_plain(rows), path)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return Staged(table, day, str(path), rows.schema.serialize().to_pybytes())

    @contextmanager
    def committing(self, note: str) -> Iterator[Changes]:
        """One lake commit, built inside the block: each table changed there is committed as it is
        changed (one Iceberg snapshot each) and the lake commit recording them all, with the
        block's manifest, is added when the block ends. Raises TableError when a table or the
        record cannot be committed: the lake's readers still see the previous commit."""
        import sqlalchemy as sa

        previous = self.commit_record()
        changes = Changes(self, dict(previous.snapshots) if previous else {},
                          dict(previous.manifest) if previous else {})
        try:
            yield changes
            at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
            with self.catalog.engine.begin() as conn:
                result = conn.execute(sa.insert(self._commits).values(
                    lake=self.name, committed_at=at, snapshots=json.dumps(changes.snapshots, sort_keys=True),
                    manifest=json.dumps(changes.manifest, sort_keys=True), note=note))
            changes.committed = Commit(int(result.inserted_primary_key[0]), at, changes.snapshots, changes.manifest,
                                       note)
        except (OSError, ValueError, sa.exc.SQLAlchemyError) as exc:
            raise TableError(f"could not commit the curated tables of {self.root}: {type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:300]}; readers still see the lake as it was — fix the "
                             "cause (space, permissions, the catalog's database) and merge again") from exc

    def _table_for(self, name: str, schema: bytes | None, by_day: bool = True):
        """The Iceberg table `name`, created (partitioned by `dt` when `by_day`) from `schema`
        when it does not exist; None when it does not and there is no schema to create it."""
        from pyiceberg.exceptions import NoSuchTableError
        from pyiceberg.transforms import IdentityTransform

        try:
            return self._load(name)
        except NoSuchTableError:
            if schema is None:
                return None
        arrow = _plain_schema(pa.ipc.read_schema(pa.py_buffer(schema)))
        iceberg = self.catalog.create_table(f"{NAMESPACE}.{name}", schema=arrow, properties=PROPERTIES,
                                            location=(self.root / NAMESPACE / name).as_uri())
        if by_day:
            with iceberg.update_spec() as spec:
                spec.add_field("dt", IdentityTransform(), "dt")
        return self._load(name)


class Changes:
    """A lake commit being built (`Tables.committing`): the snapshot of each table so far and the
    manifest to record; `committed` is the Commit once recorded."""

    def __init__(self, tables: Tables, snapshots: dict[str, int], manifest: dict) -> None:
        self._tables, self.snapshots, self.manifest = tables, snapshots, manifest
        self.committed: Commit | None = None

    def replace_days(self, name: str, staged: list[Staged], days: list[dt.date]) -> None:
        """In table `name`, the rows of `days` (and of the staged files' days) give way to the
        staged files: one Iceberg snapshot."""
        from pyiceberg.expressions import In

        if not staged and not days:
            return
        iceberg = self._tables._table_for(name, staged[0].schema if staged else None)
        if iceberg is None:
            return  # days to drop from a table never written
        held = set(self._tables._days_at(iceberg, self.snapshots.get(name))) if name in self.snapshots else set()
        replaced = sorted(d.isoformat() for d in held & ({*days} | {f.day for f in staged}))
        with iceberg.transaction() as tx:
            if replaced:
                tx.delete(In("dt", replaced))
            if staged:
                tx.add_files([f.path for f in staged], check_duplicate_files=False)
                tx.set_properties(**{ARROW_SCHEMA: base64.b64encode(staged[0].schema).decode()})
        self.snapshots[name] = self._tables._load(name).current_snapshot().snapshot_id

    def replace(self, name: str, rows: pa.Table, by_day: bool = False) -> None:
        """Table `name` replaced by `rows`: one Iceberg snapshot (a table it creates is partitioned
        by `dt` when `by_day`)."""
        schema = rows.schema.serialize().to_pybytes()
        iceberg = self._tables._table_for(name, schema, by_day=by_day)
        with iceberg.transaction() as tx:
            (tx.overwrite if iceberg.current_snapshot() else tx.append)(_plain(rows))
            tx.set_properties(**{ARROW_SCHEMA: base64.b64encode(schema).decode()})
        self.snapshots[name] = self._tables._load(name).current_snapshot().snapshot_id

    def read(self, name: str, columns: list[str] | None = None) -> pa.Table | None:
        """Table `name` as this commit has it so far; None when it has none."""
        if name not in self.snapshots:
            return None
        return self._tables._read_at(name, self.snapshots[name], columns, None)


def _located(uri: str) -> Path | Location:
    """A data file's path as Iceberg records it (a URI) as the lake's path type."""
    return lake_root(uri)


def _day_of(data_file) -> dt.date:
    """The `dt` partition of an Iceberg data file (identity on a date: days since 1970-01-01)."""
    value = data_file.partition[0]
    return value if isinstance(value, dt.date) else dt.date(1970, 1, 1) + dt.timedelta(days=int(value))


def _io_properties(root: Path | Location) -> dict[str, str]:
    """pyiceberg's FileIO settings for a lake on S3 from the environment pyarrow reads too: the
    endpoint of a store other than AWS (`AWS_ENDPOINT_URL`) and the region (without one pyiceberg
    asks AWS where the bucket is, which a private store cannot answer)."""
    if not isinstance(root, Location) or root.scheme != "s3":
        return {}
    properties = {"s3.region": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"}
    if os.environ.get("AWS_ENDPOINT_URL"):
        properties["s3.endpoint"] = os.environ["AWS_ENDPOINT_URL"]
    return properties


def _schema_of(iceberg) -> pa.Schema:
    encoded = iceberg.properties.get(ARROW_SCHEMA)
    if encoded:
        return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(encoded)))
    from pyiceberg.io.pyarrow import schema_to_pyarrow

    return schema_to_pyarrow(iceberg.schema(), include_field_ids=False)


def _plain_type(kind: pa.DataType) -> pa.DataType:
    """What Iceberg stores for an Arrow type: dictionaries decoded, timestamps with a zone in UTC
    (Iceberg's timestamptz is UTC; the zone comes back from the stored Arrow schema)."""
    if pa.types.is_dictionary(kind):
        return _plain_type(kind.value_type)
    if pa.types.is_timestamp(kind) and kind.tz not in (None, "UTC"):
        return pa.timestamp(kind.unit, tz="UTC")
    return kind


def _plain_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema([pa.field(f.name, _plain_type(f.type), f.nullable) for f in schema])


def _plain(rows: pa.Table) -> pa.Table:
    return rows.cast(_plain_schema(rows.schema)) if _plain_schema(rows.schema) != rows.schema else rows


def _as(rows: pa.Table, schema: pa.Schema) -> pa.Table:
    """`rows` as read from Iceberg (large strings, UTC) with the merge's types back."""
    columns = []
    for target in schema:
        column = rows[target.name]
        if pa.types.is_dictionary(target.type):
            column = pc.dictionary_encode(column.cast(target.type.value_type))
            column = column.cast(target.type) if column.type != target.type else column
        else:
            column = column.cast(target.type)
        columns.append(column)
    return pa.table(columns, schema=schema)
