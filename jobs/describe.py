"""Job: describe a lake — table sizes, date ranges, OneID match rates, the last trading weeks.
Reads only Parquet metadata (and the curated tables' snapshot summaries), plus two columns of curated sales_lines for the match rates and
curated store_daily (a row per store and day) for the weeks."""

from __future__ import annotations

import pandas as pd
import pyarrow.compute as pc

from lake.contract import CURATED_TABLES, RAW_TABLES
from lake.location import parquet_file
from lake.store import TABLE_ZONES, Lake


def _table_stats(lake: Lake, zone: str, table: str) -> dict | None:
    days = lake.partitions(zone, table)
    if zone in TABLE_ZONES:
        stats = lake.tables.stats(table)
        return stats and {"zone": zone, "table": table, **stats,
                          "first_dt": days[0].isoformat() if days else None,
                          "last_dt": days[-1].isoformat() if days else None, "partitions": len(days)}
    files = [f for d in days for f in lake.files(zone, table, d)] if days else lake.files(zone, table)
    if not files:
        return None
    rows = sum(parquet_file(f).metadata.num_rows for f in files)
    return {"zone": zone, "table": table, "files": len(files), "rows": rows,
            "bytes": sum(f.stat().st_size for f in files),
            "first_dt": days[0].isoformat() if days else None, "last_dt": days[-1].isoformat() if days else None,
            "partitions": len(days)}


WEEK_STARTS = {"monday": 0, "saturday": 5, "sunday": 6}  # datetime.weekday() of the first day


def trading_weeks(lake: Lake, count: int = 4) -> list[dict]:
    """Net units and revenue of the lake's last `count` trading weeks, as the brand counts weeks
    (settings.yaml week_start), newest last; a week the lake does not cover whole says how many
    of its days it has."""
    if not lake.partitions("curated", "store_daily"):
        return []
    first_day = WEEK_STARTS[lake.settings().week_start]
    daily = lake.read_all("curated", "store_daily", columns=["dt", "units_net", "revenue_net"]).to_pandas()
    days = pd.to_datetime(daily["dt"])
    daily["week"] = (days - pd.to_timedelta((days.dt.weekday - first_day) % 7, unit="D")).dt.date
    weeks = daily.groupby("week").agg(units_net=("units_net", "sum"), revenue_net=("revenue_net", "sum"),
                                      days=("dt", "nunique")).tail(count)
    return [{"week_of": week.isoformat(), "days": int(row.days), "units_net": int(row.units_net),
             "revenue_net": round(float(row.revenue_net), 2)} for week, row in weeks.iterrows()]


def main(lake: Lake) -> dict:
    """A dict with `tables` (one entry per present table) and `oneid` (match rates), or
    `tables: []` when the lake is empty."""
    tables = [s for s in (_table_stats(lake, "raw", t) for t in RAW_TABLES) if s]
    tables += [s for s in (_table_stats(lake, "curated", t) for t in CURATED_TABLES) if s]
    quarantine = lake.root / "quarantine"
    quarantined = sorted(f"{table.name}/{day.name}" for run in (quarantine.iterdir() if quarantine.is_dir() else [])
                         if run.is_dir() for table in run.iterdir() if table.is_dir() for day in table.glob("dt=*"))
    oneid = None
    if lake.partitions("curated", "sales_lines"):
        lines = lake.read_all("curated", "sales_lines", columns=["channel", "resolution"])
        oneid = {}
        for channel in ("online", "offline"):
            part = lines.filter(pc.equal(lines["channel"], channel))
            counts = {c["values"]: int(c["counts"]) for c in pc.value_counts(part["resolution"]).to_pylist()}
            total = max(1, part.num_rows)
            oneid[channel] = {"lines": part.num_rows, **{k: round(v / total, 4) for k, v in sorted(counts.items())},
                              "member_share": round(sum(v for k, v in counts.items() if k in ("channel_id", "phone")) / total, 4)}
        if lake.files("raw", "members") and lake.partitions("curated", "interactions"):
            members = parquet_file(lake.files("raw", "members")[0]).metadata.num_rows
            active = lake.read_all("curated", "interactions", columns=["member_id"])
            oneid["members"] = members
            oneid["members_with_purchases"] = len(pc.unique(active["member_id"]))
    settings = lake.settings()
    record = lake.tables.commit_record()
    return {"lake": str(lake.root), "commit": record.id if record else None, "tables": tables, "quarantined_partitions": quarantined, "oneid": oneid,
            "currency": settings.currency, "week_start": settings.week_start, "weeks": trading_weeks(lake)}
