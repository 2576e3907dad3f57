"""Where the lake's tables live on disk, and the only code that reads and writes them.

Layout under the lake root::

    raw/<table>/part-*.parquet                 dimension tables
    raw/<table>/dt=YYYY-MM-DD/part-*.parquet   fact tables, hive-partitioned by local date
    curated/<table>/                           Apache Iceberg tables written by the merge (lake/tables.py)
    curated/catalog.db                         their SQL catalog and the lake's commits
    quarantine/<run>/<table>/dt=…/             partitions that failed validation, with report.json
    truth/                                     what the generator drew from; no model reads it
    forecasts/                                 batch predictions

The root is a local folder or a URI that pyarrow's filesystems reach (`s3://bucket/lake`,
`gs://…`, `hdfs://…`; lake/location.py). On a local disk writes are atomic: a partition is written
to a temporary folder beside it and renamed into place, so a crash or a full disk leaves the
previous version intact. An object store has no rename: there each file is replaced by one atomic
PUT, and a partition of several files changes file by file (a brand's drop, the generator and the
importer write one file per partition). The curated zone is read through the
same methods (`partitions`, `read`, `read_all`, `count_rows`, `has`) as the lake's latest commit
shows it, or as commit N showed it for `Lake(root, commit=N)`; only the merge writes it.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import uuid
from functools import cached_property
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lake.errors import LakeError
from lake.location import Location, is_remote, lake_root, parquet_file, read_parquet, write_parquet

ZONES = ("raw", "curated", "quarantine", "truth", "forecasts")
TABLE_ZONES = ("curated",)  # zones of Iceberg tables; the others hold Parquet files


class Lake:
    """A lake rooted at a folder or a URI, its curated tables as of its latest commit or of
    `commit`. Cheap to create and to pickle (it holds only the root and the commit)."""

    def __init__(self, root: str | os.PathLike[str] | Location, commit: int | None = None) -> None:
        self.root: Path | Location = lake_root(root)
        self.commit = commit

    def __repr__(self) -> str:
        return f"Lake({str(self.root)!r}{'' if self.commit is None else f', commit={self.commit}'})"

    def __reduce__(self):  # pickles as its path and commit, for Ray tasks
        return (Lake, (str(self.root), self.commit))

    def at(self, commit: int | None) -> Lake:
        """This lake with its curated tables as lake commit `commit` showed them."""
        return Lake(self.root, commit)

    @cached_property
    def tables(self):
        """The curated zone's tables and the lake's commits (lake/tables.py)."""
        from lake.tables import Tables

        return Tables(self.root, self.commit)

    def settings(self):
        """The brand settings kept with the lake (`settings.yaml` at its root; defaults without
        it). Raises SettingsError naming what is wrong in the file."""
        from lake.settings import SETTINGS_FILE, LakeSettings, parse_settings

        path = self.root / SETTINGS_FILE
        return parse_settings(path.read_text(), str(path)) if path.is_file() else LakeSettings()

    # --- paths --------------------------------------------------------------------------------
    @property
    def remote(self) -> bool:
        """Whether the lake is on a filesystem other than this machine's (an object store)."""
        return is_remote(self.root)

    def table_dir(self, zone: str, table: str) -> Path | Location:
        if zone not in ZONES:
            raise ValueError(f"unknown zone {zone!r}; expected one of {ZONES}")
        return self.root / zone / table

    def partition_dir(self, zone: str, table: str, day: dt.date) -> Path | Location:
        return self.table_dir(zone, table) / f"dt={day.isoformat()}"

    def partitions(self, zone: str, table: str) -> list[dt.date]:
        """Dates of the `dt=` partitions of a table, sorted; [] when the table is absent."""
        if zone in TABLE_ZONES:
            return self.tables.days(table)
        folder = self.table_dir(zone, table)
        if not folder.is_dir():
            return []
        days = []
        for child in folder.iterdir():
            if child.is_dir() and child.name.startswith("dt="):
                try:
                    days.append(dt.date.fromisoformat(child.name[3:]))
                except ValueError:
                    raise LakeError(
                        f"{child}: partition folder name is not dt=YYYY-MM-DD; rename or remove it"
                    ) from None
        return sorted(days)

    def has(self, zone: str, table: str) -> bool:
        """Whether the lake has rows of `table` (files in a file zone, a committed table in a
        table zone)."""
        if zone in TABLE_ZONES:
            return self.tables.snapshot(table) is not None
        return bool(self.files(zone, table) or self.partitions(zone, table))

    def files(self, zone: str, table: str, day: dt.date | None = None) -> list[Path | Location]:
        """Parquet files of a table (or of one partition) of a file zone, sorted by name."""
        if zone in TABLE_ZONES:
            raise ValueError(f"{zone}/{table} is a table, not files: read it with read / read_all")
        folder = self.partition_dir(zone, table, day) if day else self.table_dir(zone, table)
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.glob("*.parquet") if p.is_file())

    def count_rows(self, zone: str, table: str) -> int:
        """Rows of a table from its Parquet footers (a table's snapshot), without reading the
        data; 0 when absent."""
        if zone in TABLE_ZONES:
            return self.tables.count_rows(table)
        files = self.files(zone, table) + [f for day in self.partitions(zone, table) for f in self.files(zone, table, day)]
        return sum(parquet_file(f).metadata.num_rows for f in files)

    # --- reading ------------------------------------------------------------------------------
    def read(self, zone: str, table: str, day: dt.date | None = None,
             columns: list[str] | None = None) -> pa.Table:
        """Read a dimension table, or one partition of a fact table, as one Arrow table.

        Raises LakeError when the table or partition has no files.
        """
        if zone in TABLE_ZONES:
            return self.tables.read(table, columns, [day] if day else None)
        files = self.files(zone, table, day)
        if not files:
            where = f"{table} dt={day}" if day else table
            raise LakeError(f"{zone}/{where}: no Parquet files under {self.table_dir(zone, table)}")
        parts = [read_parquet(f, columns) for f in files]
        return pa.concat_tables(parts, promote_options="permissive") if len(parts) > 1 else parts[0]

    def read_all(self, zone: str, table: str, columns: list[str] | None = None,
                 days: list[dt.date] | None = None) -> pa.Table:
        """Read every partition of a fact table (or the given days) into one table, adding `dt`."""
        if zone in TABLE_ZONES:
            if days is None and not self.partitions(zone, table):
                raise LakeError(f"{zone}/{table}: no partitions with data in {self.root}; run quanyu data merge first")
            return self.tables.read(table, columns, days)
        chunks = []
        for day in days if days is not None else self.partitions(zone, table):
            if not self.files(zone, table, day):
                continue
            part = self.read(zone, table, day, columns=columns)
            if "dt" not in part.column_names:
                part = part.append_column("dt", pa.array([day] * part.num_rows, pa.date32()))
            chunks.append(part)
        if not chunks:
            raise LakeError(f"{zone}/{table}: no partitions with data under {self.table_dir(zone, table)}")
        return pa.concat_tables(chunks, promote_options="permissive")

    # --- writing ------------------------------------------------------------------------------
    def write(self, zone: str, table: str, data: pa.Table, day: dt.date | None = None,
              part: str = "part-0") -> Path:
        """Replace a dimension table (or one partition) with `data`, atomically.

        The folder is written beside its final place and swapped in, so readers see the old or
        the new version, never a mix, and a failure leaves the old one untouched.
        """
        _files_only(zone)
        final = self.partition_dir(zone, table, day) if day else self.table_dir(zone, table)
        if self.remote:
            return _write_folder_remote(final, {part: data})
        return _write_folder_atomically(final, {part: data})

    def write_day(self, zone: str, tables: dict[str, pa.Table], day: dt.date, part: str = "part-0") -> None:
        """Replace one day's partition of several tables together. Every table is written to a
        staging folder first and swapped in only when all are written, so a failure while
        writing (a full disk, an unwritable folder) leaves every table of the zone as it was.

        On an object store each table's file is put in place in turn (one atomic PUT each).

        Raises LakeError saying what failed."""
        _files_only(zone)
        if self.remote:
            for table, data in tables.items():
                _write_folder_remote(self.partition_dir(zone, table, day), {part: data})
            return
        staged: dict[str, Path] = {}
        try:
            for table, data in tables.items():
                staged[table] = _stage(self.partition_dir(zone, table, day), {part: data})
        except OSError as exc:
            for folder in staged.values():
                shutil.rmtree(folder, ignore_errors=True)
            raise LakeError(f"could not write {zone} dt={day} under {self.root}: {exc.strerror or exc}; "
                            f"no table was changed — free space or fix permissions there, then run again") from exc
        for table, folder in staged.items():
            try:
                _swap(folder, self.partition_dir(zone, table, day))
            except OSError as exc:
                raise LakeError(f"could not swap in {zone}/{table} dt={day}: {exc.strerror or exc}") from exc

    def add_file(self, zone: str, table: str, data: pa.Table, day: dt.date | None, part: str) -> Path:
        """Add (or replace) one file inside a partition without touching its other files."""
        _files_only(zone)
        folder = self.partition_dir(zone, table, day) if day else self.table_dir(zone, table)
        target = folder / f"{part}.parquet"
        if self.remote:
            write_parquet(data, target)
            return target
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{part}.{uuid.uuid4().hex}.tmp"
        try:
            pq.write_table(data, tmp, compression="zstd")
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return target

    def move_to(self, source: Path | Location, destination: Path | Location) -> None:
        """Move a file or folder inside the lake (used by quarantine)."""
        if isinstance(source, Location):
            source.move(destination)
            return
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(source), str(destination))


def _files_only(zone: str) -> None:
    if zone in TABLE_ZONES:
        raise ValueError(f"the {zone} zone's tables are written by the merge's commit (lake/tables.py), not as files")


def _stage(final: Path, files: dict[str, pa.Table]) -> Path:
    """Write `files` into a new folder beside `final`; on failure remove it and re-raise."""
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.parent / f".{final.name}.{uuid.uuid4().hex}.staging"
    try:
        staging.mkdir()
        for name, data in files.items():
            pq.write_table(data, staging / f"{name}.parquet", compression="zstd")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging


def _swap(staging: Path, final: Path) -> None:
    """Put a staged folder in `final`'s place (renames only: no space needed); the old version
    comes back if the swap fails."""
    retired = final.parent / f".{final.name}.{uuid.uuid4().hex}.retired"
    try:
        if final.exists():
            os.replace(final, retired)
        os.replace(staging, final)
    except OSError:
        if retired.exists() and not final.exists():
            os.replace(retired, final)  # put the old version back
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(retired, ignore_errors=True)


def _write_folder_remote(final: Location, files: dict[str, pa.Table]) -> Location:
    """`files` put in `final` one by one (each an atomic PUT), then the folder's other Parquet
    files deleted: readers see the old or the new version of each file."""
    try:
        for name, data in files.items():
            write_parquet(data, final / f"{name}.parquet")
        for old in final.glob("*.parquet"):
            if old.name[: -len(".parquet")] not in files:
                old.unlink(missing_ok=True)
    except OSError as exc:
        raise LakeError(f"could not write {final}: {exc}; check the store's credentials and space, then run again") from exc
    return final


def _write_folder_atomically(final: Path, files: dict[str, pa.Table]) -> Path:
    try:
        _swap(_stage(final, files), final)
    except OSError as exc:
        raise LakeError(f"could not write {final}: {exc.strerror or exc}; the previous version is unchanged") from exc
    return final
