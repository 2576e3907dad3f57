"""A lake on an S3-protocol store (issue 24): the raw zone read and the curated tables written
through pyarrow's filesystems by URI, against moto's S3 server on loopback (the one S3-protocol
server the package registries offer here; MinIO's is a binary download)."""

from __future__ import annotations

import json
import time

import pyarrow.compute as pc
import pyarrow.fs as pafs
import pytest

from jobs import merge, validate
from lake.location import Location
from lake.store import Lake

BUCKET = "brand"
DAYS = 14  # two weeks of the tiny lake: every table, quick to move


@pytest.fixture(scope="module")
def s3_store(tmp_path_factory):
    """moto's S3 server on a free loopback port with a bucket, its variables in this process's
    environment (the merge's Ray tasks get them through the lake's runtime environment), and a
    QUANYU_HOME of its own (where a lake on a store keeps its catalog)."""
    from jobs.processes import s3_server

    folder = tmp_path_factory.mktemp("moto")
    with s3_server(folder / "moto.log", (BUCKET,)) as env, pytest.MonkeyPatch.context() as patch:
        for name, value in {**env, "QUANYU_HOME": str(folder / "home")}.items():
            patch.setenv(name, value)
        yield {**env, "QUANYU_HOME": str(folder / "home")}


def upload(local: Lake, uri: str, days: list) -> Lake:
    """The raw zone of `local` (its dimension tables and `days` of its fact tables) put under `uri`."""
    remote = Lake(uri)
    for table in sorted(p.name for p in (local.root / "raw").iterdir()):
        held = local.partitions("raw", table)
        if not held:
            remote.write("raw", table, local.read("raw", table))
        for day in sorted(set(held) & set(days)):
            remote.write("raw", table, local.read("raw", table, day), day=day)
    return remote


def sorted_rows(table):
    keys = [(c, "ascending") for c in table.column_names if c != "ts" and not str(table[c].type).startswith("dictionary")]
    return table.take(pc.sort_indices(table, keys)).to_pylist()


def test_a_lake_on_s3_validates_merges_and_reads_as_the_same_lake_on_disk(s3_store, tiny_lake, ray_session, tmp_path):
    days = tiny_lake.partitions("raw", "pos_transactions")[:DAYS]
    remote = upload(tiny_lake, f"s3://{BUCKET}/lake", days)
    assert isinstance(remote.root, Location) and str(remote.root) == f"s3://{BUCKET}/lake"
    assert remote.partitions("raw", "pos_transactions") == days
    assert remote.count_rows("raw", "products") == tiny_lake.count_rows("raw", "products")

    checked = validate.main(validate.ValidateConfig(), remote)
    assert checked.exit_code == 0, [v.line() for v in checked.violations]
    merged = merge.main(merge.MergeConfig(), remote)
    assert merged.exit_code == 0 and merged.merged == days and merged.commit == 1, merged.failed

    local = Lake(tmp_path / "lake")  # the same days merged on a local disk
    upload(tiny_lake, str(local.root), days)
    assert merge.main(merge.MergeConfig(), local).exit_code == 0
    for table in merge.CURATED_DAILY:
        assert remote.partitions("curated", table) == local.partitions("curated", table) == days
        assert sorted_rows(remote.read_all("curated", table)) == sorted_rows(local.read_all("curated", table)), table
    assert remote.read("curated", "store_performance").num_rows == local.read("curated", "store_performance").num_rows

    # the tables' files are on the store; the catalog (SQLite) under QUANYU_HOME, named after the lake
    fs = pafs.S3FileSystem(endpoint_override=s3_store["AWS_ENDPOINT_URL"])
    data = fs.get_file_info(pafs.FileSelector(f"{BUCKET}/lake/curated/sales_lines/data", recursive=True))
    assert sum(f.path.endswith(".parquet") for f in data) == DAYS
    assert remote.tables.uri.startswith(f"sqlite:///{s3_store['QUANYU_HOME']}/catalogs/")

    again = merge.main(merge.MergeConfig(), remote)
    assert again.merged == [] and again.commit is None and remote.tables.commit_record().id == 1

    # a backfilled day on the store is merged again, and only it
    changed = days[5]
    lines = remote.read("raw", "pos_transactions", changed)
    remote.write("raw", "pos_transactions", lines.slice(1), day=changed)
    time.sleep(1.1)  # S3 keeps modification times to the second: the fingerprint must see the change
    backfill = merge.main(merge.MergeConfig(), remote)
    assert backfill.merged == [changed] and backfill.commit == 2
    assert remote.at(1).read("curated", "sales_lines", changed).num_rows == \
        remote.read("curated", "sales_lines", changed).num_rows + 1


def test_the_cli_generates_straight_into_a_lake_uri_merges_it_and_names_a_bucket_that_is_not_there(s3_store, ray_session,
                                                                                                  capsys):
    uri = f"s3://{BUCKET}/generated"
    code, out = run(["data", "generate", "--scale", "tiny", "--days", "28", "--seed", "3", "--lake", uri], capsys)
    assert code == 0, out
    assert len(Lake(uri).partitions("raw", "pos_transactions")) == 28
    code, out = run(["data", "validate", "--lake", uri], capsys)
    assert code == 0, out
    code, out = run(["data", "merge", "--lake", uri], capsys)
    assert code == 0 and "lake commit 1" in out, out
    code, out = run(["data", "describe", "--lake", uri, "--json"], capsys)
    described = json.loads(out)
    assert code == 0 and described["lake"] == uri and described["commit"] == 1
    assert {t["table"]: t["partitions"] for t in described["tables"] if t["zone"] == "curated"}["demand_daily"] == 28

    code, out = run(["data", "validate", "--lake", "s3://no-such-bucket/lake"], capsys)
    assert code != 0 and "Traceback" not in out and "s3://no-such-bucket/lake" in out, out


def run(args: list[str], capsys) -> tuple[int, str]:
    from jobs.cli import main

    with pytest.raises(SystemExit) as done:
        main(args)
    out = capsys.readouterr()
    return done.value.code, out.out + out.err
