"""The curated zone's Iceberg tables and the lake's commits (lake/tables.py): a merge is visible
all at once or not at all, and a catalog shared on PostgreSQL keeps lakes apart."""

from __future__ import annotations

import shutil

import pyarrow.parquet as pq
import pytest

from jobs import merge
from lake.store import Lake, LakeError
from lake.tables import CATALOG_ENV, Changes


def test_a_merge_that_stops_between_two_table_commits_shows_nothing_of_itself(lake_copy, ray_session, monkeypatch):
    """The merge commits its four daily tables, then fails before store_performance and the lake
    commit (a lost connection, a killed driver): the tables' own snapshots moved, the lake's
    readers see every table as before; the next merge does the day again and commits it all."""
    days = lake_copy.partitions("raw", "pos_transactions")
    changed = days[20]
    f = lake_copy.files("raw", "pos_transactions", changed)[0]
    pq.write_table(pq.read_table(f).slice(1), f)
    commit = lake_copy.tables.commit_record()
    before = {t: lake_copy.read("curated", t, changed) for t in merge.CURATED_DAILY}

    def lost(self, name, rows, by_day=False):
        raise OSError("connection to the catalog lost")

    with monkeypatch.context() as patch:
        patch.setattr(Changes, "replace", lost)
        with pytest.raises(LakeError, match="connection to the catalog lost.*readers still see the lake as it was"):
            merge.main(merge.MergeConfig(), lake_copy)
    moved = [t for t in merge.CURATED_DAILY
             if lake_copy.tables._load(t).current_snapshot().snapshot_id != commit.snapshots[t]]
    assert moved == list(merge.CURATED_DAILY)  # the half-made merge is in the tables …
    assert lake_copy.tables.commit_record() == commit  # … and invisible
    assert {t: lake_copy.read("curated", t, changed) for t in merge.CURATED_DAILY} == before
    again = merge.main(merge.MergeConfig(), lake_copy)
    assert again.merged == [changed] and again.commit == commit.id + 1
    assert lake_copy.read("curated", "sales_lines", changed).num_rows == before["sales_lines"].num_rows - 1


def test_a_catalog_shared_on_postgresql_keeps_each_lake_apart(raw_copy, postgres, ray_session, tmp_path, monkeypatch):
    """QUANYU_CATALOG_URI (the PostgreSQL server MLflow uses in production): two lakes' tables and
    commits in one database, each lake seeing only its own; no catalog file beside the lake."""
    monkeypatch.setenv(CATALOG_ENV, postgres.create_database("quanyu_catalog"))
    other = Lake(tmp_path / "other")
    shutil.copytree(raw_copy.root / "raw", other.root / "raw")
    days = raw_copy.partitions("raw", "online_orders")
    assert merge.main(merge.MergeConfig(dates=days[:4]), raw_copy).commit == 1
    assert merge.main(merge.MergeConfig(dates=days[10:12]), other).commit == 2  # ids are the database's
    assert merge.main(merge.MergeConfig(dates=days[4:6]), raw_copy).commit == 3
    assert Lake(raw_copy.root).partitions("curated", "demand_daily") == days[:6]
    assert Lake(other.root).partitions("curated", "demand_daily") == days[10:12]
    assert [c.id for c in Lake(raw_copy.root).tables.history()] == [1, 3]
    assert Lake(raw_copy.root).at(1).partitions("curated", "demand_daily") == days[:4]
    assert not (raw_copy.root / "curated" / "catalog.db").exists()
