"""Validation: every rule on corrupted input, reports that name what is wrong, and quarantine."""

from __future__ import annotations

import datetime as dt
import json
import shutil

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from jobs.cli import main as cli_main
from lake.contract import ONLINE_ORDERS, POS_TRANSACTIONS, RAW_TABLES
from lake.validate import check_table


def _rules(violations) -> set[str]:
    return {v.rule for v in violations}


@pytest.fixture(scope="module")
def pos_day(tiny_lake):
    day = tiny_lake.partitions("raw", "pos_transactions")[40]
    return day, tiny_lake.read("raw", "pos_transactions", day)


def _set(table: pa.Table, column: str, index: int, value) -> pa.Table:
    values = table.column(column).to_pylist()
    values[index] = value
    i = table.column_names.index(column)
    return table.set_column(i, table.field(i), pa.array(values, table.field(i).type))


def test_a_clean_partition_has_no_violations(pos_day):
    day, table = pos_day
    assert check_table(table, POS_TRANSACTIONS, partition=day) == []


def test_negative_quantity_without_refund_flag(pos_day):
    day, table = pos_day
    found = check_table(_set(table, "quantity", 0, -2), POS_TRANSACTIONS, partition=day)
    (v,) = [v for v in found if v.rule == "refund_sign"]
    assert v.rows == 1 and "is_refund" in v.message and v.examples[0]["quantity"] == -2


def test_the_price_ceiling_and_its_currency_follow_the_brand_settings(pos_day):
    """200,000 is a sane ceiling for a price per unit in CNY, not in JPY or KRW: settings.yaml
    raises it, and the message names the lake's currency and the setting."""
    from lake.settings import parse_settings

    day, table = pos_day
    dear = _set(table, "unit_price", 0, 350_000.0)
    (v,) = [v for v in check_table(dear, POS_TRANSACTIONS, partition=day) if v.rule == "price_range"]
    assert v.rows == 1 and "200,000] CNY" in v.message and "max_unit_price" in v.message
    yen = parse_settings("currency: JPY\nmax_unit_price: 5000000\n")
    found = check_table(dear, POS_TRANSACTIONS, partition=day, max_unit_price=yen.max_unit_price, currency=yen.currency)
    assert "price_range" not in _rules(found)
    (v,) = [v for v in check_table(_set(dear, "unit_price", 1, 6e6), POS_TRANSACTIONS, partition=day,
                                   max_unit_price=yen.max_unit_price, currency=yen.currency) if v.rule == "price_range"]
    assert v.rows == 1 and "5,000,000] JPY" in v.message


def test_odd_unicode_in_ids_is_shown_visibly(pos_day):
    day, table = pos_day
    found = check_table(_set(table, "sku_id", 3, "TO-1\u200b"), POS_TRANSACTIONS, partition=day)
    (v,) = [v for v in found if v.rule == "id_characters"]
    assert v.rows == 1 and "\\u200b" in v.line()


def test_chinese_ids_are_fine(pos_day):
    day, table = pos_day
    renamed = _set(table, "txn_id", 0, "上海店-20250101-000001")
    assert "id_characters" not in _rules(check_table(renamed, POS_TRANSACTIONS, partition=day))


def test_wrong_types_and_missing_columns(pos_day):
    day, table = pos_day
    as_text = table.set_column(table.column_names.index("quantity"), "quantity",
                               pc.cast(table["quantity"], pa.string()))
    found = check_table(as_text, POS_TRANSACTIONS, partition=day)
    (v,) = [v for v in found if v.rule == "type"]
    assert "quantity has type string" in v.message and v.rows == table.num_rows
    found = check_table(table.drop_columns(["sku_id", "unit_price"]), POS_TRANSACTIONS, partition=day)
    (v,) = [v for v in found if v.rule == "missing_columns"]
    assert "sku_id" in v.message and "unit_price" in v.message


def test_timestamps_outside_their_partition(pos_day):
    day, table = pos_day
    shifted = table.set_column(table.column_names.index("txn_ts"), "txn_ts",
                               pc.add(table["txn_ts"], pa.scalar(dt.timedelta(days=1))))
    (v,) = [v for v in check_table(shifted, POS_TRANSACTIONS, partition=day) if v.rule == "ts_outside_partition"]
    assert v.rows == table.num_rows and str(day) in v.message


def test_foreign_keys_and_channel_mismatch(pos_day, tiny_lake):
    day, table = pos_day
    skus = set(tiny_lake.read("raw", "products").column("sku_id").to_pylist())
    found = check_table(_set(table, "sku_id", 0, "NO-SUCH-SKU"), POS_TRANSACTIONS, partition=day,
                        references={"products.sku_id": skus}, store_channels={s: "offline" for s in table["store_id"].to_pylist()} | {"ON-JD": "online"})
    assert [v.rows for v in found if v.rule == "foreign_key"] == [1]
    found = check_table(_set(table, "store_id", 0, "ON-JD"), POS_TRANSACTIONS, partition=day,
                        store_channels={"ON-JD": "online"})
    assert [v.rows for v in found if v.rule == "channel_mismatch"] == [1]


def test_price_nan_infinity_and_range(pos_day):
    day, table = pos_day
    for value, rule in ((float("nan"), "not_finite"), (float("inf"), "not_finite"), (1e9, "price_range"),
                        (-5.0, "price_range")):
        assert rule in _rules(check_table(_set(table, "unit_price", 0, value), POS_TRANSACTIONS, partition=day))


def test_identity_mapped_to_two_members_is_a_conflict(tiny_lake):
    identities = tiny_lake.read("raw", "identities")
    first = identities.slice(0, 1).to_pylist()[0]
    other = identities.filter(pc.not_equal(identities["member_id"], first["member_id"])).slice(0, 1).to_pylist()[0]
    clash = pa.concat_tables([identities, pa.Table.from_pylist([{**first, "member_id": other["member_id"]}],
                                                               schema=identities.schema)])
    (v,) = [v for v in check_table(clash, RAW_TABLES["identities"]) if v.rule == "identity_conflict"]
    assert v.rows == 2 and "exactly one member_id" in v.message


def _corrupt_lake(lake) -> dict[str, dt.date]:
    """Break several partitions of a lake copy in different ways; return which day got what."""
    days = lake.partitions("raw", "online_orders")
    broken = {"truncated": days[10], "wrong_type": days[20], "empty": days[30], "duplicate": days[41],
              "negative": days[50]}
    f = lake.files("raw", "online_orders", broken["truncated"])[0]
    f.write_bytes(f.read_bytes()[:100])
    f = lake.files("raw", "online_orders", broken["wrong_type"])[0]
    t = pq.read_table(f)
    pq.write_table(t.set_column(t.column_names.index("unit_price"), "unit_price", pc.cast(t["unit_price"], pa.string())), f)
    for f in lake.files("raw", "online_orders", broken["empty"]):
        f.unlink()
    pq.write_table(ONLINE_ORDERS.schema().empty_table(), lake.partition_dir("raw", "online_orders", broken["empty"]) / "part-x.parquet")
    # a copy of day 40's lines with their timestamps moved onto day 41: only the key repeats
    t = lake.read("raw", "online_orders", days[40])
    t = t.set_column(t.column_names.index("order_ts"), "order_ts",
                     pc.add(t["order_ts"], pa.scalar(broken["duplicate"] - days[40])))
    pq.write_table(t, lake.partition_dir("raw", "online_orders", broken["duplicate"]) / "part-copy.parquet")
    f = lake.files("raw", "online_orders", broken["negative"])[0]
    t = pq.read_table(f)
    pq.write_table(_set(t, "quantity", 0, -1), f)
    return broken


def _run(args, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as done:
        cli_main(args)
    out = capsys.readouterr()
    return done.value.code, out.out + out.err


def test_corrupted_lake_is_rejected_with_a_report_naming_each_problem(raw_copy, ray_session, capsys, tmp_path):
    broken = _corrupt_lake(raw_copy)
    report = tmp_path / "report.json"
    code, out = _run(["data", "validate", "--lake", str(raw_copy.root), "--report", str(report)], capsys)
    assert code == 1 and "validation REJECTED" in out and "Traceback" not in out
    found = {(v["rule"], v["partition"]) for v in json.loads(report.read_text())["violations"]}
    assert ("unreadable", str(broken["truncated"])) in found
    assert ("type", str(broken["wrong_type"])) in found
    assert ("empty_partition", str(broken["empty"])) in found
    assert ("duplicate_across_partitions", str(broken["duplicate"])) in found
    assert ("refund_sign", str(broken["negative"])) in found
    assert f"raw/online_orders/dt={broken['truncated']}" in out  # the file is named
    assert len({p for _, p in found}) == 5  # nothing else was flagged


def test_quarantine_moves_bad_partitions_counts_their_rows_and_passes_the_rest(raw_copy, ray_session, capsys):
    broken = _corrupt_lake(raw_copy)
    rows_before = {d: sum(pq.ParquetFile(f).metadata.num_rows for f in raw_copy.files("raw", "online_orders", d))
                   for d in (broken["negative"], broken["duplicate"])}
    code, out = _run(["data", "validate", "--lake", str(raw_copy.root), "--quarantine"], capsys)
    assert code == 3 and "passed after quarantine" in out
    moved = sorted((raw_copy.root / "quarantine").glob("*/online_orders/dt=*"))
    assert {p.name[3:] for p in moved} == {str(d) for d in broken.values()}
    (report,) = (raw_copy.root / "quarantine").glob("*/report.json")
    quarantined = {q["partition"]: q["rows"] for q in json.loads(report.read_text())["quarantined"]}
    assert quarantined[str(broken["negative"])] == rows_before[broken["negative"]]
    assert quarantined[str(broken["duplicate"])] == rows_before[broken["duplicate"]]
    code, out = _run(["data", "validate", "--lake", str(raw_copy.root)], capsys)
    assert code == 0, out
    code, out = _run(["data", "merge", "--lake", str(raw_copy.root)], capsys)
    assert code == 0 and "Traceback" not in out


def test_a_missing_dimension_table_rejects_even_with_quarantine(raw_copy, ray_session, capsys):
    for f in raw_copy.files("raw", "products"):
        f.unlink()
    code, out = _run(["data", "validate", "--lake", str(raw_copy.root), "--quarantine"], capsys)
    assert code == 1 and "required table products" in out


def test_validating_a_folder_without_a_lake_says_so(tmp_path, ray_session, capsys):
    code, out = _run(["data", "validate", "--lake", str(tmp_path / "nothing")], capsys)
    assert code == 1 and "no raw/ folder" in out


def test_overlong_text_is_refused_without_echoing_it(tiny_lake):
    day = tiny_lake.partitions("raw", "online_orders")[10]
    table = tiny_lake.read("raw", "online_orders", day)
    long = "x" * 10_000_000
    found = check_table(_set(_set(table, "delivery_cell", 0, long), "phone_hash", 1, long), ONLINE_ORDERS,
                        partition=day)
    flagged = {v.message.split()[0]: v for v in found if v.rule == "string_length"}
    assert set(flagged) == {"delivery_cell", "phone_hash"} and all(v.rows == 1 for v in flagged.values())
    assert len(flagged["phone_hash"].line()) < 1_000  # the report names the row's key, not the 10 MB value


def test_a_partition_dated_in_the_future_is_quarantined(raw_copy, ray_session, capsys):
    from jobs import validate

    last = raw_copy.partitions("raw", "online_orders")[-1]
    future = last + dt.timedelta(days=30)
    source = raw_copy.files("raw", "online_orders", last)[0]
    table = pq.read_table(source)
    # the last day again, a month later, under new order ids: only the date is wrong
    table = table.set_column(table.column_names.index("order_ts"), "order_ts",
                             pc.add(table.column("order_ts"), pa.scalar(dt.timedelta(days=30))))
    table = table.set_column(table.column_names.index("order_id"), "order_id",
                             pc.binary_join_element_wise(table.column("order_id"), "-f", ""))
    target = raw_copy.partition_dir("raw", "online_orders", future)
    target.mkdir(parents=True)
    pq.write_table(table, target / source.name)
    result = validate.main(validate.ValidateConfig(quarantine=True, today=last), raw_copy)
    assert {(q["table"], q["partition"]) for q in result.quarantined} == {("online_orders", future.isoformat())}
    (v,) = [v for v in result.violations if v.rule == "future_partition"]
    assert "future_days" in v.message and v.partition == future.isoformat()
    # a lake whose settings.yaml allows partitions dated up to 45 days ahead takes it back
    shutil.move(next((raw_copy.root / "quarantine").glob("*/online_orders/dt=*")), target)
    (raw_copy.root / "settings.yaml").write_text("future_days: 45\n")
    assert validate.main(validate.ValidateConfig(today=last), raw_copy).exit_code == 0
    (raw_copy.root / "settings.yaml").write_text("timezone: Mars/Olympus\n")
    code, out = _run(["data", "validate", "--lake", str(raw_copy.root)], capsys)
    assert code == 1 and "unknown time zone 'Mars/Olympus'" in out
