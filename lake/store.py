"""Where the lake's tables live on disk, and the only code that reads and writes them.

Layout under the lake root::

    raw/<table>/part-*.parquet                 dimension tables
    raw/<table>/dt=YYYY-MM-DD/part-*.parquet   fact tables, hive-partitioned by local date
    curated/<table>/...                        written by the merge, same conventions
    quarantine/<run>/<table>/dt=…/             partitions that failed validation, with report.json
    truth/                                     what the generator drew from; no model reads it
    forecasts/                                 batch predictions

Writes are atomic: a partition is written to a temporary folder beside it and renamed into place,
so a crash or a full disk leaves the previous version intact.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ZONES = ("raw", "curated", "quarantine", "truth", "forecasts")


class LakeError(Exception):
    """A problem with the lake on disk that the user must fix; the message says how."""


class Lake:
    """A lake rooted at a folder. Cheap to create and to pickle (it holds only the path)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()

    def __repr__(self) -> str:
        return f"Lake({str(self.root)!r})"

    def __reduce__(self):  # pickles as its path, for Ray tasks
        return (Lake, (str(self.root),))

    def settings(self):
        """The brand settings kept with the lake (`settings.yaml` at its root; defaults without
        it). Raises SettingsError naming what is wrong in the file."""
        from lake.settings import SETTINGS_FILE, LakeSettings, parse_settings

        path = self.root / SETTINGS_FILE
        return parse_settings(path.read_text(), str(path)) if path.is_file() else LakeSettings()

    # --- paths --------------------------------------------------------------------------------
    def table_dir(self, zone: str, table: str) -> Path:
        if zone not in ZONES:
            raise ValueError(f"unknown zone {zone!r}; expected one of {ZONES}")
        return self.root / zone / table

    def partition_dir(self, zone: str, table: str, day: dt.date) -> Path:
        return self.table_dir(zone, table) / f"dt={day.isoformat()}"

    def partitions(self, zone: str, table: str) -> list[dt.date]:
        """Dates of the `dt=` partitions of a table, sorted; [] when the table is absent."""
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

    def files(self, zone: str, table: str, day: dt.date | None = None) -> list[Path]:
        """Parquet files of a table (or of one partition), sorted by name."""
        folder = self.partition_dir(zone, table, day) if day else self.table_dir(zone, table)
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.glob("*.parquet") if p.is_file())

    def count_rows(self, zone: str, table: str) -> int:
        """Rows of a table from its Parquet footers, without reading the data; 0 when absent."""
        files = self.files(zone, table) + [f for day in self.partitions(zone, table) for f in self.files(zone, table, day)]
        return sum(pq.ParquetFile(f).metadata.num_rows for f in files)

    # --- reading ------------------------------------------------------------------------------
    def read(self, zone: str, table: str, day: dt.date | None = None,
             columns: list[str] | None = None) -> pa.Table:
        """Read a dimension table, or one partition of a fact table, as one Arrow table.

        Raises LakeError when the table or partition has no files.
        """
        files = self.files(zone, table, day)
        if not files:
            where = f"{table} dt={day}" if day else table
            raise LakeError(f"{zone}/{where}: no Parquet files under {self.table_dir(zone, table)}")
        parts = [pq.read_table(f, columns=columns) for f in files]
        return pa.concat_tables(parts, promote_options="permissive") if len(parts) > 1 else parts[0]

    def read_all(self, zone: str, table: str, columns: list[str] | None = None,
                 days: list[dt.date] | None = None) -> pa.Table:
        """Read every partition of a fact table (or the given days) into one table, adding `dt`."""
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
        final = self.partition_dir(zone, table, day) if day else self.table_dir(zone, table)
        return _write_folder_atomically(final, {part: data})

    def write_day(self, zone: str, tables: dict[str, pa.Table], day: dt.date, part: str = "part-0") -> None:
        """Replace one day's partition of several tables together. Every table is written to a
        staging folder first and swapped in only when all are written, so a failure while
        writing (a full disk, an unwritable folder) leaves every table of the zone as it was.

        Raises LakeError saying what failed."""
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
        folder = self.partition_dir(zone, table, day) if day else self.table_dir(zone, table)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{part}.parquet"
        tmp = folder / f".{part}.{uuid.uuid4().hex}.tmp"
        try:
            pq.write_table(data, tmp, compression="zstd")
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return target

    def move_to(self, source: Path, destination: Path) -> None:
        """Move a file or folder inside the lake (used by quarantine)."""
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(source), str(destination))


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


def _write_folder_atomically(final: Path, files: dict[str, pa.Table]) -> Path:
    try:
        _swap(_stage(final, files), final)
    except OSError as exc:
        raise LakeError(f"could not write {final}: {exc.strerror or exc}; the previous version is unchanged") from exc
    return final
