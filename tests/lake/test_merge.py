"""The omnichannel merge: conservation, OneID, zero-row rules, idempotency, incrementality,
and a lake that carries only the contract's required columns."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from jobs import merge, validate
from lake.contract import RAW_TABLES


def _raw_sum(lake, table: str, column: str) -> float:
    return float(pc.sum(lake.read_all("raw", table, columns=[column])[column]).as_py())


def test_units_and_revenue_are_conserved(tiny_lake):
    raw_units = sum(_raw_sum(tiny_lake, t, "quantity") for t in ("online_orders", "pos_transactions"))
    lines = tiny_lake.read_all("curated", "sales_lines", columns=["quantity", "revenue"])
    demand = tiny_lake.read_all("curated", "demand_daily", columns=["units_net", "units_sold", "units_refunded", "revenue_net"])
    assert raw_units == pc.sum(lines["quantity"]).as_py() == pc.sum(demand["units_net"]).as_py()
    assert pc.sum(demand["units_sold"]).as_py() - pc.sum(demand["units_refunded"]).as_py() == raw_units
    assert pc.sum(lines["revenue"]).as_py() == pytest.approx(pc.sum(demand["revenue_net"]).as_py(), rel=1e-9)


def test_zero_rows_only_where_ranged_and_the_store_traded(tiny_lake):
    demand = tiny_lake.read_all("curated", "demand_daily").to_pandas()
    zeros = demand[(demand["units_sold"] == 0) & (demand["units_refunded"] == 0)]
    assert len(zeros) > 1000
    assortment = tiny_lake.read("raw", "assortment").to_pandas()
    ranged = zeros.merge(assortment, on=["store_id", "sku_id"], how="left")
    ok = (ranged["valid_from"] <= ranged["dt"]) & (ranged["valid_to"].isna() | (ranged["dt"] <= ranged["valid_to"]))
    assert ok.groupby([ranged["dt"], ranged["store_id"], ranged["sku_id"]]).any().all()
    traded = demand[demand["units_sold"] > 0][["dt", "store_id"]].drop_duplicates()
    offline = zeros[zeros["channel"] == "offline"]
    assert len(offline.merge(traded, on=["dt", "store_id"])) == len(offline) > 0


def test_an_online_shop_trades_every_day_it_is_open(tiny_lake):
    """A day without an order is a day of zero sales for a shop on a platform (it never closes),
    and a closed day for a store: only the shop's ranged SKUs get zero rows."""
    from lake.merge import merge_day

    stores = tiny_lake.read("raw", "stores")
    shop = stores.filter(pc.equal(stores["channel"], "online"))["store_id"][0].as_py()
    day = tiny_lake.partitions("raw", "pos_transactions")[40]
    online = tiny_lake.read("raw", "online_orders", day)
    online = online.filter(pc.not_equal(online["store_id"], shop))  # the shop sold nothing that day
    pos = tiny_lake.read("raw", "pos_transactions", day)
    quiet_store = pos["store_id"][0].as_py()
    pos = pos.filter(pc.not_equal(pos["store_id"], quiet_store))  # nor did one store
    dims = dataclasses.replace(merge.load_dimensions(tiny_lake), assortment=None)  # ranged: what sold lately
    live = pc.unique(pos["sku_id"]).to_pylist()[:3]  # SKUs on sale that day
    recent = pa.table({"store_id": [shop, shop, quiet_store], "sku_id": live})
    demand = merge_day(day, online, pos, dims, recent).demand_daily.to_pandas()
    own = demand[demand["store_id"] == shop]
    assert sorted(own["sku_id"]) == sorted(live[:2]) and (own["units_sold"] == 0).all()
    assert (own["channel"] == "online").all()
    assert quiet_store not in set(demand["store_id"])


def test_oneid_links_only_to_the_true_member(tiny_lake):
    """Every resolved line belongs to the member the generator's truth says bought it."""
    truth = tiny_lake.read("truth", "consumers").to_pandas()
    day = tiny_lake.partitions("raw", "online_orders")[100]
    raw = tiny_lake.read("raw", "online_orders", day).to_pandas()
    stores = tiny_lake.read("raw", "stores").to_pandas().set_index("store_id")
    raw["platform"] = raw["store_id"].map(stores["platform"])
    account_owner = {}
    for platform in ("tmall", "jd", "douyin", "miniprogram"):
        account_owner.update({(platform, a): m for a, m in zip(truth[f"{platform}_id"], truth["member_id"])})
    phone_owner = dict(zip(truth["phone_hash"], truth["member_id"]))
    curated = tiny_lake.read("curated", "sales_lines", day).to_pandas()
    online = curated[curated["channel"] == "online"].merge(
        raw[["order_id", "line_no", "is_refund", "platform", "buyer_id", "phone_hash"]],
        on=["order_id", "line_no", "is_refund"], suffixes=("", "_raw"))
    assert len(online) == len(raw)
    by_account = online[online["resolution"] == "channel_id"]
    assert len(by_account) > 50
    assert (by_account["member_id"] == [account_owner[(p, b)] for p, b in zip(by_account["platform_raw"], by_account["buyer_id"])]).all()
    by_phone = online[online["resolution"] == "phone"]
    assert (by_phone["member_id"] == by_phone["phone_hash"].map(phone_owner)).all()


def test_merging_again_changes_nothing(lake_copy, ray_session):
    day = lake_copy.partitions("curated", "sales_lines")[77]
    before = {t: lake_copy.read("curated", t, day) for t in merge.CURATED_DAILY}
    perf = lake_copy.read("curated", "store_performance")
    result = merge.main(merge.MergeConfig(rebuild=True), lake_copy)
    assert len(result.merged) == len(lake_copy.partitions("raw", "online_orders"))
    for table, data in before.items():
        assert lake_copy.read("curated", table, day).equals(data), table
    assert lake_copy.read("curated", "store_performance").equals(perf)
    commit = lake_copy.tables.commit_record()
    again = merge.main(merge.MergeConfig(), lake_copy)
    assert again.merged == [] and again.skipped == len(result.merged)
    assert again.commit is None and lake_copy.tables.commit_record() == commit  # no new commit, no new snapshot


def test_a_changed_day_is_the_only_day_merged_again(lake_copy, ray_session):
    """A late correction to one raw day: that day alone is merged again, one lake commit whose
    daily tables each swapped exactly one data file (that day's), the other days' rows intact;
    the commit before it still reads as it was (time travel)."""
    days = lake_copy.partitions("raw", "pos_transactions")
    changed = days[60]
    previous = lake_copy.tables.commit_record()
    others = [d for d in days[:100] if d != changed]
    before = lake_copy.read_all("curated", "demand_daily", days=others)
    old_day = lake_copy.read("curated", "demand_daily", changed)
    f = lake_copy.files("raw", "pos_transactions", changed)[0]
    table = pq.read_table(f)
    pq.write_table(table.slice(1), f)  # a late correction removes one line
    result = merge.main(merge.MergeConfig(), lake_copy)
    assert result.merged == [changed] and result.commit == previous.id + 1
    for name in merge.CURATED_DAILY:  # each table swapped that day's data file, and only it
        table = lake_copy.tables._load(name)
        old, new = ({(p, d["dt"]) for p, d in zip(files["file_path"].to_pylist(), files["partition"].to_pylist())}
                    for files in (table.inspect.files(s) for s in (previous.snapshots[name],
                                                                    lake_copy.tables.snapshot(name))))
        assert len(old - new) == len(new - old) == 1 and {d for _, d in old ^ new} == {changed}, name
    assert lake_copy.read_all("curated", "demand_daily", days=others).equals(before)
    assert not lake_copy.read("curated", "demand_daily", changed).equals(old_day)
    assert lake_copy.at(previous.id).read("curated", "demand_daily", changed).equals(old_day)
    assert result.raw_units_net == result.curated_units_net


def test_quarantined_days_leave_the_curated_zone(lake_copy, ray_session):
    import shutil

    day = lake_copy.partitions("raw", "online_orders")[5]
    for table in ("online_orders", "pos_transactions"):
        shutil.rmtree(lake_copy.partition_dir("raw", table, day), ignore_errors=True)
    result = merge.main(merge.MergeConfig(), lake_copy)
    assert result.removed == [day]
    assert day not in lake_copy.partitions("curated", "sales_lines")


def test_naive_timestamps_are_local_time_of_the_brand_s_time_zone(raw_copy, ray_session):
    """A Berlin brand writes wall-clock times without a zone: 00:30 on the partition's date is
    that date in Berlin (not 17:30 the day before, as it would be read in the default zone), and
    the curated lines keep the brand's zone."""
    (raw_copy.root / "settings.yaml").write_text("timezone: Europe/Berlin\n")
    day = raw_copy.partitions("raw", "pos_transactions")[30]
    (f,) = raw_copy.files("raw", "pos_transactions", day)
    table = pq.read_table(f)
    i = table.column_names.index("txn_ts")
    wall = pa.array([dt.datetime.combine(day, dt.time(0, 30))] * table.num_rows, pa.timestamp("us"))
    pq.write_table(table.set_column(i, pa.field("txn_ts", pa.timestamp("us")), wall), f)
    checked = validate.main(validate.ValidateConfig(dates=[day]), raw_copy)
    assert not [v for v in checked.violations if v.table == "pos_transactions"], checked.violations
    assert merge.main(merge.MergeConfig(dates=[day]), raw_copy).exit_code == 0
    lines = raw_copy.read("curated", "sales_lines", day)
    assert lines.schema.field("ts").type == pa.timestamp("us", tz="Europe/Berlin")
    offline = lines.filter(pc.equal(lines["channel"], "offline")).to_pandas()
    assert len(offline) == table.num_rows
    assert (offline["ts"].dt.tz_convert("Europe/Berlin").dt.strftime("%Y-%m-%d %H:%M") == f"{day} 00:30").all()


def test_a_lake_with_only_required_columns_works(raw_copy, ray_session):
    for name, spec in RAW_TABLES.items():
        if not spec.required_table:
            import shutil

            shutil.rmtree(raw_copy.table_dir("raw", name))
            continue
        days = raw_copy.partitions("raw", name) or [None]
        for day in days:
            for f in raw_copy.files("raw", name, day):
                pq.write_table(pq.read_table(f, columns=list(spec.required_columns)), f)
    assert validate.main(validate.ValidateConfig(), raw_copy).exit_code == 0
    result = merge.main(merge.MergeConfig(), raw_copy)
    assert result.exit_code == 0 and result.raw_units_net == result.curated_units_net
    demand = raw_copy.read_all("curated", "demand_daily").to_pandas()
    assert (demand["units_sold"] == 0).sum() > 1000  # ranging inferred from recent sales
    lines = raw_copy.read_all("curated", "sales_lines", columns=["resolution"]).to_pandas()
    # members, identities, promotions, calendar and sites are optional now: without a data bank
    # every line is a guest's (or anonymous at the till), and the merge says so per channel
    assert set(lines["resolution"]) == {"guest", "anonymous"}
    assert {w.split()[4] for w in result.warnings} == {"other", "pos"}  # shops without a platform are other shops
    assert raw_copy.read("curated", "store_performance").num_rows >= 4


def test_merge_refuses_unknown_dates_and_missing_dimensions(raw_copy, ray_session):
    from lake.store import LakeError

    with pytest.raises(LakeError, match="no raw data for 1999-01-01"):
        merge.main(merge.MergeConfig(dates=[dt.date(1999, 1, 1)]), raw_copy)
    for f in raw_copy.files("raw", "stores"):
        os.remove(f)
    with pytest.raises(LakeError, match="raw/stores is missing"):
        merge.main(merge.MergeConfig(), raw_copy)


def _curated(lake, day) -> dict[str, pa.Table]:
    return {name: lake.read("curated", name, day) for name in merge.CURATED_DAILY}


def _data_files(lake, name: str, day) -> set[str]:
    """The data files of a day of a curated table, on disk (referenced by the table or not)."""
    return {str(p) for p in (lake.table_dir("curated", name) / "data" / f"dt={day}").glob("*.parquet")}


def test_a_failed_write_during_a_merge_leaves_the_day_s_curated_tables_as_they_were(lake_copy, ray_session):
    """One of the day's four curated tables cannot be written (its data folder is in the way: a file
    where the folder must be, a real OSError). The day is reported as failed, with the reason,
    and none of its other tables changed; once the obstacle is gone the day merges."""
    days = lake_copy.partitions("raw", "pos_transactions")
    changed = days[30]
    f = lake_copy.files("raw", "pos_transactions", changed)[0]
    pq.write_table(pq.read_table(f).slice(1), f)  # a late correction: the day must be merged again
    before, commit = _curated(lake_copy, changed), lake_copy.tables.commit_record()
    files_before = _data_files(lake_copy, "sales_lines", changed)
    blocked = lake_copy.table_dir("curated", "store_daily") / "data"
    moved = blocked.with_name("data.aside")
    os.replace(blocked, moved)
    blocked.write_text("in the way")
    try:
        result = merge.main(merge.MergeConfig(), lake_copy)
    finally:
        blocked.unlink()
        os.replace(moved, blocked)
    assert result.exit_code == 1 and list(result.failed) == [changed.isoformat()]
    assert "no table was changed" in result.failed[changed.isoformat()]
    assert result.commit is None and lake_copy.tables.commit_record() == commit
    assert _curated(lake_copy, changed) == before
    assert _data_files(lake_copy, "sales_lines", changed) == files_before  # the day's other files removed
    again = merge.main(merge.MergeConfig(), lake_copy)
    assert again.exit_code == 0 and again.merged == [changed]
    assert _curated(lake_copy, changed) != before


def _mount_tmpfs(target, size: int) -> bool:
    import subprocess

    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)], capture_output=True)
    return done.returncode == 0


def test_a_full_disk_during_a_merge_changes_no_curated_table(lake_copy, ray_session, tmp_path):
    """The lake on a small tmpfs filled to the last byte: the merge fails with a message naming the
    full disk, every curated table reads as it was (no new lake commit), and with space back it
    merges."""
    import subprocess

    from tests.conftest import copy_lake

    size = sum(p.stat().st_size for p in lake_copy.root.rglob("*") if p.is_file())
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, size * 2 + 8 * 2**20):
        pytest.skip("this machine does not allow mounting a tmpfs (needs root and CAP_SYS_ADMIN); "
                    "test_a_failed_write_during_a_merge_… covers the same path with another OSError")
    lake = None
    try:
        lake = copy_lake(lake_copy, disk / "lake")
        days = lake.partitions("raw", "pos_transactions")
        changed = days[45]
        f = lake.files("raw", "pos_transactions", changed)[0]
        pq.write_table(pq.read_table(f).slice(1), f)
        before = {d: _curated(lake, d) for d in (changed, days[0], days[-1])}
        commit = lake.tables.commit_record()
        filler = disk / "filler"
        with open(filler, "wb") as out:  # fill the disk
            try:
                while True:
                    out.write(b"\0" * 65536)
                    out.flush()
            except OSError:
                pass
        failed = merge.main(merge.MergeConfig(), lake)
        assert failed.exit_code == 1 and "No space left on device" in failed.failed[changed.isoformat()]
        assert {d: _curated(lake, d) for d in before} == before
        assert lake.tables.commit_record() == commit
        filler.unlink()
        again = merge.main(merge.MergeConfig(), lake)
        assert again.exit_code == 0 and again.merged == [changed]
    finally:
        if lake is not None:  # its catalog's SQLite file closed, so that the disk unmounts
            lake.tables.catalog.engine.dispose()
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_every_curated_table_reads_with_outside_tools_as_documented(tiny_lake, monkeypatch):
    """docs/lake.md's recipes: pyiceberg from the lake's catalog, Polars' scan_iceberg, and
    DuckDB over the data files of the current snapshot; each sees every row of every daily
    curated table, dt as a date."""
    import duckdb
    import polars as pl
    from pyiceberg.catalog.sql import SqlCatalog

    catalog = SqlCatalog("quanyu", uri=f"sqlite:///{tiny_lake.root / 'curated' / 'catalog.db'}")
    for name in ("sales_lines", "demand_daily", "interactions", "store_daily"):
        rows = tiny_lake.count_rows("curated", name)
        table = catalog.load_table(f"curated.{name}")
        arrow = table.scan().to_arrow()
        assert arrow.num_rows == rows > 0 and arrow.schema.field("dt").type == pa.date32()
        monkeypatch.setenv("POLARS_ICEBERG_PLANNER", "pyiceberg")  # without the optional polars_iceberg plan
        counted = pl.scan_iceberg(table).select(pl.len(), pl.col("dt").min()).collect()
        assert counted.item(0, 0) == rows and counted.schema["dt"] == pl.Date, name
        files = table.inspect.files()["file_path"].to_pylist()
        got = duckdb.sql(f"select count(*), typeof(min(dt)) from read_parquet({files!r})").fetchall()[0]
        assert got == (rows, "DATE"), name
