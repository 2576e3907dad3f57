"""Validation rules of the lake's contract: pure functions from a table (one file or one
partition) to a list of violations that name the table, file, rule, row count and examples.

Every rule explains what is wrong and how to fix it. Nothing here reads or moves files; the
validation job (`jobs/validate.py`) does the I/O, the fan-out and the quarantine.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lake.contract import Table, cast_column, in_zone, same_type

MAX_UNITS_PER_LINE = 1_000
MAX_UNIT_PRICE = 200_000.0  # in the lake's currency (settings.yaml max_unit_price); above: a unit or decimal error
MAX_ID_LENGTH = 128
MAX_TEXT_LENGTH = 1_000  # any other string: names, addresses, cells, hashes


@dataclass
class Violation:
    """One broken rule in one file (or partition) of one table."""

    table: str
    rule: str
    rows: int
    message: str
    file: str | None = None
    partition: str | None = None
    examples: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        where = self.file or (f"{self.table}/dt={self.partition}" if self.partition else self.table)
        example = f"  e.g. {_show(self.examples[0])}" if self.examples else ""
        return f"{self.table:<17} {self.rule:<27} {self.rows:>8,} rows  {where}\n    {self.message}{example}"


def grouped_lines(violations: list[Violation]) -> list[str]:
    """The report's lines with one entry per table × rule × message: a mistake repeated in every
    partition (integer ids, say) is said once, with how many partitions and rows it touched."""
    groups: dict[tuple[str, str, str], list[Violation]] = {}
    for v in violations:
        groups.setdefault((v.table, v.rule, v.message), []).append(v)
    lines = []
    for (table, rule, message), found in groups.items():
        if len(found) == 1:
            lines.append(found[0].line())
            continue
        days = sorted(v.partition for v in found if v.partition)
        where = f"{len(found)} partitions, dt={days[0]} … dt={days[-1]}" if days else f"{len(found)} files"
        example = next((f"  e.g. {_show(v.examples[0])}" for v in found if v.examples), "")
        lines.append(f"{table:<17} {rule:<27} {sum(v.rows for v in found):>8,} rows  {where}\n    {message}{example}")
    return lines


def _show(row: dict) -> str:
    """A row for a report: ids are shown with ascii() so invisible characters are visible."""
    return ", ".join(f"{k}={ascii(v) if isinstance(v, str) else v}" for k, v in row.items())


def _examples(data: pa.Table, mask: np.ndarray, columns: list[str], limit: int = 3) -> list[dict]:
    idx = np.flatnonzero(mask)[:limit]
    cols = [c for c in dict.fromkeys(columns) if c in data.column_names]
    if not len(idx) or not cols:
        return []
    rows = data.select(cols).take(pa.array(idx)).to_pylist()
    return [{k: (v.isoformat() if isinstance(v, (dt.date, dt.datetime)) else v) for k, v in r.items()} for r in rows]


def _mask(arr: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A boolean Arrow array as a numpy mask, nulls as False."""
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)


def conform_types(data: pa.Table, spec: Table, timezone: str | None = None) -> tuple[pa.Table, list[Violation]]:
    """Check required columns and cast contract columns to their types (naive timestamps are
    local time in `timezone`, the brand's). Returns the cast table (unknown extra columns kept as
    they are) and the violations; a column that cannot be cast stays uncast and later rules skip
    it."""
    violations = []
    missing = [c for c in spec.required_columns if c not in data.column_names]
    if missing:
        violations.append(Violation(
            spec.name, "missing_columns", data.num_rows,
            f"required column(s) {', '.join(missing)} are missing; add them (see docs/lake.md, table {spec.name})"))
    columns = {}
    for name in data.column_names:
        column = data.column(name)
        try:
            target = in_zone(spec.column(name).type, timezone)
        except KeyError:
            columns[name] = column
            continue
        if same_type(column.type, target) or (pa.types.is_null(column.type)):
            columns[name] = column.cast(target) if pa.types.is_null(column.type) else column
            continue
        try:
            readable = (
                (pa.types.is_timestamp(target) and pa.types.is_timestamp(column.type))
                or (pa.types.is_floating(target) and pa.types.is_integer(column.type))
                or (pa.types.is_integer(target) and pa.types.is_integer(column.type))  # safe: raises on overflow
                or (pa.types.is_date(target) and (pa.types.is_timestamp(column.type) or pa.types.is_date(column.type)))
                or (pa.types.is_string(target) and pa.types.is_large_string(column.type))
            )
            if not readable:
                raise pa.ArrowInvalid("incompatible")
            columns[name] = cast_column(column, target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            violations.append(Violation(
                spec.name, "type", data.num_rows,
                f"column {name} has type {column.type}, the contract says {target}; write it as {target}",
                examples=[{name: _plain(v)} for v in column.slice(0, 3).to_pylist()]))
            columns[name] = column
    return pa.table(columns), violations


def _plain(v):
    return v.isoformat() if isinstance(v, (dt.date, dt.datetime)) else v


def _typed(data: pa.Table, spec: Table, name: str) -> bool:
    """Whether a contract column is present with its contract type (so rules may use it)."""
    return name in data.column_names and same_type(data.column(name).type, spec.column(name).type)


def check_table(data: pa.Table, spec: Table, *, partition: dt.date | None = None,
                references: dict[str, set[str]] | None = None,
                store_channels: dict[str, str] | None = None, timezone: str | None = None,
                max_unit_price: float = MAX_UNIT_PRICE, currency: str = "CNY") -> list[Violation]:
    """All row-level rules of `spec` on one table (a dimension table, or one fact file).

    `references` maps "table.column" to the set of valid values for foreign keys; absent
    references are not checked. `timezone`: the brand's (settings.yaml) for the local date of
    timestamps; `max_unit_price` and `currency` likewise. `store_channels` maps store_id to offline/online so a POS line
    at an online shop (or the reverse) is caught.
    """
    data, violations = conform_types(data, spec, timezone)
    n = data.num_rows
    key_cols = list(spec.key)
    if n == 0:
        violations.append(Violation(spec.name, "empty", 0,
                                    "the file has no rows; remove it or write the missing data"))
        return violations

    def add(rule: str, mask: np.ndarray, message: str, columns: list[str]) -> None:
        count = int(mask.sum())
        if count:
            violations.append(Violation(spec.name, rule, count, message,
                                        examples=_examples(data, mask, key_cols + columns)))

    for col in spec.columns:
        if not _typed(data, spec, col.name):
            continue
        values = data.column(col.name)
        if not col.allows_null:
            add("required_null", _mask(pc.is_null(values)), f"{col.name} is required but empty; fill it", [col.name])
        if col.allowed:
            bad = _mask(pc.and_(pc.is_valid(values), pc.invert(pc.is_in(values, pa.array(col.allowed)))))
            add("allowed_values", bad, f"{col.name} must be one of {', '.join(col.allowed)}", [col.name])
        if pa.types.is_string(col.type) and (col.name.endswith("_id") or col.name in spec.key):
            add("id_characters", _bad_ids(values),
                f"{col.name} has ids with control, invisible or surrounding-space characters, or longer than "
                f"{MAX_ID_LENGTH}; clean the ids at the source", [col.name])
        elif pa.types.is_string(col.type):
            add("string_length", _mask(pc.greater(pc.utf8_length(values), MAX_TEXT_LENGTH)),
                f"{col.name} has values longer than {MAX_TEXT_LENGTH:,} characters; this column holds a short "
                "text or code — check the export", [])
        if pa.types.is_floating(col.type):
            arr = values.to_numpy(zero_copy_only=False).astype(float)  # nulls become NaN here
            add("not_finite", _mask(pc.is_valid(values)) & ~np.isfinite(arr),
                f"{col.name} has NaN or infinite values; use empty (null) for unknown", [col.name])

    if len(key_cols) and all(_typed(data, spec, k) for k in key_cols):
        dup = _duplicated(data.select(key_cols))
        if spec.name == "identities" and dup.any():
            pairs = data.select(key_cols + ["member_id"]).filter(pa.array(dup))
            conflicts = pairs.group_by(key_cols).aggregate([("member_id", "count_distinct")])
            n_conflict = int(pc.sum(pc.greater(conflicts.column("member_id_count_distinct"), 1)).as_py() or 0)
            if n_conflict:
                add("identity_conflict", dup,
                    f"{n_conflict} channel id(s) are linked to more than one member; a channel id must map to "
                    "exactly one member_id — resolve the conflict in the data bank", ["member_id"])
            else:
                add("duplicate_key", dup, f"rows repeat the key ({', '.join(key_cols)}); keep one", [])
        else:
            add("duplicate_key", dup, f"rows repeat the key ({', '.join(key_cols)}); keep one of each", [])

    if _typed(data, spec, "quantity") and _typed(data, spec, "is_refund"):
        q = data.column("quantity").to_numpy(zero_copy_only=False).astype(float)
        refund = _mask(data.column("is_refund"))
        add("quantity_zero", q == 0, "quantity is 0; drop lines without units", ["quantity"])
        add("refund_sign", (q < 0) & ~refund,
            "negative quantity on a line not flagged is_refund; flag refunds (is_refund = true) or fix the sign",
            ["quantity", "is_refund"])
        add("refund_sign", (q > 0) & refund, "refund line with positive quantity; refunds carry negative units",
            ["quantity", "is_refund"])
        add("quantity_range", np.abs(q) > MAX_UNITS_PER_LINE,
            f"more than {MAX_UNITS_PER_LINE} units on one line; check for unit errors (boxes vs pieces)", ["quantity"])
    for price_col in ("unit_price", "list_price"):
        if _typed(data, spec, price_col):
            p = data.column(price_col).to_numpy(zero_copy_only=False).astype(float)
            bad = (p < 0) | (p > max_unit_price) | ((p == 0) & (price_col == "list_price"))
            add("price_range", np.nan_to_num(bad, nan=False).astype(bool),
                f"{price_col} outside (0, {max_unit_price:,.0f}] {currency}; check currency and decimal point "
                "(a currency of small units may need a higher max_unit_price in settings.yaml)", [price_col])
    if _typed(data, spec, "discount_pct"):
        d = data.column("discount_pct").to_numpy(zero_copy_only=False).astype(float)
        add("discount_range", (d < 0) | (d > 0.9), "discount_pct must be a fraction in [0, 0.9]", ["discount_pct"])
    for lo, hi in (("start_date", "end_date"), ("valid_from", "valid_to"), ("open_date", "close_date"),
                   ("launch_date", "end_date")):
        if _typed(data, spec, lo) and _typed(data, spec, hi):
            add("date_order", _mask(pc.greater(data.column(lo), data.column(hi))),
                f"{lo} is after {hi}; swap or fix the dates", [lo, hi])
    for coord, limit in (("lat", 90.0), ("lon", 180.0)):
        if _typed(data, spec, coord):
            v = data.column(coord).to_numpy(zero_copy_only=False).astype(float)
            add("coordinates", np.abs(np.nan_to_num(v)) > limit, f"{coord} outside ±{limit} degrees", [coord])
    if spec.name == "stores" and _typed(data, spec, "channel"):
        offline = _mask(pc.equal(data.column("channel"), "offline"))
        for col in ("city", "lat", "lon"):
            if col in data.column_names:
                add("offline_without_location", offline & _mask(pc.is_null(data.column(col))),
                    f"offline stores need {col} (online shops leave it empty)", [col])

    if partition is not None and spec.ts_column and _typed(data, spec, spec.ts_column):
        stamps = data.column(spec.ts_column)
        if timezone:  # the brand's local date (settings.yaml), whatever zone the column is stored in
            stamps = stamps.cast(pa.timestamp(stamps.type.unit, tz=timezone))
        local_day = pc.cast(pc.local_timestamp(stamps), pa.date32())
        add("ts_outside_partition", _mask(pc.not_equal(local_day, pa.scalar(partition, pa.date32()))),
            f"{spec.ts_column} is not on the partition's local date {partition}; write each line into "
            f"dt=<its local date>", [spec.ts_column])

    for column, (ref_table, ref_col) in spec.foreign_keys.items():
        valid = (references or {}).get(f"{ref_table}.{ref_col}")
        if valid is None or not _typed(data, spec, column):
            continue
        values = data.column(column)
        unknown = _mask(pc.and_(pc.is_valid(values), pc.invert(pc.is_in(values, pa.array(sorted(valid), pa.string())))))
        add("foreign_key", unknown,
            f"{column} not found in {ref_table}.{ref_col}; add the missing {ref_table} rows or fix the ids", [column])
    if store_channels and _typed(data, spec, "store_id") and spec.name in ("online_orders", "pos_transactions"):
        expected = "online" if spec.name == "online_orders" else "offline"
        elsewhere = pa.array(sorted(s for s, c in store_channels.items() if c != expected), pa.string())
        add("channel_mismatch", _mask(pc.is_in(data.column("store_id"), elsewhere)), f"store_id is not an {expected} store; {spec.name} takes {expected} stores only",
            ["store_id"])
    return violations


def future_partition(table: str, day: dt.date, latest: dt.date) -> Violation | None:
    """A fact partition dated after `latest` (today in the brand's time zone plus the lake's
    `future_days`): a clock or export error that would otherwise become the lake's newest day."""
    if day <= latest:
        return None
    return Violation(table, "future_partition", 0,
                     f"dt={day} lies after {latest} (today plus future_days in settings.yaml); "
                     "fix the export's dates or the partition name", partition=day.isoformat())


# control, format (zero-width, bidi overrides), private-use and surrogate characters, line and
# paragraph separators, leading or trailing white space, or an empty id (RE2 syntax)
BAD_ID_PATTERN = r"[\p{Cc}\p{Cf}\p{Co}\p{Cs}\x{2028}\x{2029}]|^\s|\s$|^$"


def _bad_ids(values: pa.ChunkedArray) -> np.ndarray:
    """Ids with invisible or control characters, surrounding white space, empty or over-long."""
    bad = pc.or_(pc.match_substring_regex(values, BAD_ID_PATTERN), pc.greater(pc.utf8_length(values), MAX_ID_LENGTH))
    return _mask(bad)


def _duplicated(keys: pa.Table) -> np.ndarray:
    """Rows whose key appears more than once (all copies marked)."""
    frame = keys.to_pandas()
    return frame.duplicated(keep=False).to_numpy()


def key_hashes(data: pa.Table, key: tuple[str, ...]) -> np.ndarray:
    """64-bit hashes of the key columns, for finding duplicates across partitions."""
    import pandas as pd

    return pd.util.hash_pandas_object(data.select(list(key)).to_pandas(), index=False).to_numpy()
