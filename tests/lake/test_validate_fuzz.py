"""Validation fuzz over every raw table: hypothesis takes real rows of the tiny lake, breaks one
cell (or a whole column's type, or a key) in a way the contract forbids, and the validator must
report exactly that rule on that column — never crash, never pass it."""

from __future__ import annotations

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from lake.contract import RAW_TABLES
from lake.validate import MAX_ID_LENGTH, check_table

ROWS = 25


@pytest.fixture(scope="module")
def samples(tiny_lake) -> dict[str, pa.Table]:
    """Up to ROWS clean rows of every raw table (one partition of each fact table)."""
    out = {}
    for name, spec in RAW_TABLES.items():
        if spec.partitioned:
            days = tiny_lake.partitions("raw", name)
            table = tiny_lake.read("raw", name, days[len(days) // 2])
        else:
            table = tiny_lake.read("raw", name)
        out[name] = table.slice(0, ROWS)
    return out


def _set(table: pa.Table, column: str, index: int, value) -> pa.Table:
    values = table.column(column).to_pylist()
    values[index] = value
    i = table.column_names.index(column)
    return table.set_column(i, table.field(i), pa.array(values, table.field(i).type))


def _corruptions(spec, table: pa.Table) -> list[tuple[str, str, object]]:
    """(column, rule the validator must report, the corruption) for every column of the table."""
    out = []
    for col in spec.columns:
        if col.name not in table.column_names:
            continue
        if not col.allows_null:
            out.append((col.name, "required_null", None))
        if col.allowed:
            out.append((col.name, "allowed_values", "something-else"))
        if pa.types.is_string(col.type) and (col.name.endswith("_id") or col.name in spec.key):
            for bad in ("\u200bZW", " padded", "ctl\x07", "x" * (MAX_ID_LENGTH + 1)):
                out.append((col.name, "id_characters", bad))
        if pa.types.is_floating(col.type):
            for bad in (float("nan"), float("inf"), float("-inf")):
                out.append((col.name, "not_finite", bad))
        if not pa.types.is_string(col.type):
            out.append((col.name, "type", "not a " + str(col.type)))  # the whole column written as text
    if spec.key:
        out.append((",".join(spec.key), "duplicate_key", "repeat a row"))
    return out


@pytest.mark.parametrize("table_name", sorted(RAW_TABLES))
def test_every_clean_sample_passes(samples, table_name):
    violations = check_table(samples[table_name], RAW_TABLES[table_name])
    assert [v.line() for v in violations] == [], table_name


@pytest.mark.parametrize("table_name", sorted(RAW_TABLES))
@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_every_forbidden_value_is_reported_on_its_column(samples, table_name, data):
    spec = RAW_TABLES[table_name]
    table = samples[table_name]
    column, rule, value = data.draw(st.sampled_from(_corruptions(spec, table)), label="corruption")
    row = data.draw(st.integers(0, table.num_rows - 1), label="row")
    if rule == "type":
        as_text = [str(v) for v in table.column(column).to_pylist()]
        as_text[row] = value
        broken = table.set_column(table.column_names.index(column), column, pa.array(as_text, pa.string()))
    elif rule == "duplicate_key":
        broken = pa.concat_tables([table, table.slice(row, 1)])
    else:
        broken = _set(table, column, row, value)
    violations = check_table(broken, spec)
    rules = {v.rule for v in violations}
    expected = {"duplicate_key", "identity_conflict"} if rule == "duplicate_key" else {rule}
    assert rules & expected, (table_name, column, rule, repr(value)[:40], [v.line() for v in violations])
    if rule != "duplicate_key":
        named = [v for v in violations if v.rule == rule]
        assert any(column in v.message for v in named), [v.line() for v in named]
