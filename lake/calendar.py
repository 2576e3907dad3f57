"""The Chinese retail calendar: the events a brand plans around, as (date, event, phase) rows.

Lunar-calendar dates (Chinese New Year, Qixi, Mid-Autumn) are listed for the years the platform
supports; asking for a year outside them raises, rather than silently missing an event.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd

CHINESE_NEW_YEAR = {2023: dt.date(2023, 1, 22), 2024: dt.date(2024, 2, 10), 2025: dt.date(2025, 1, 29),
                    2026: dt.date(2026, 2, 17), 2027: dt.date(2027, 2, 6), 2028: dt.date(2028, 1, 26)}
QIXI = {2023: dt.date(2023, 8, 22), 2024: dt.date(2024, 8, 10), 2025: dt.date(2025, 8, 29),
        2026: dt.date(2026, 8, 19), 2027: dt.date(2027, 8, 8), 2028: dt.date(2028, 8, 26)}
MID_AUTUMN = {2023: dt.date(2023, 9, 29), 2024: dt.date(2024, 9, 17), 2025: dt.date(2025, 10, 6),
              2026: dt.date(2026, 9, 25), 2027: dt.date(2027, 9, 15), 2028: dt.date(2028, 10, 3)}
SUPPORTED_YEARS = range(min(CHINESE_NEW_YEAR), max(CHINESE_NEW_YEAR) + 1)


def _span(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def events_of_year(year: int) -> list[tuple[dt.date, str, str]]:
    """Every (date, event, phase) of one year. Raises ValueError for unsupported years."""
    if year not in SUPPORTED_YEARS:
        raise ValueError(f"the retail calendar knows years {SUPPORTED_YEARS.start}–{SUPPORTED_YEARS.stop - 1}, "
                         f"not {year}; add its lunar dates to lake/calendar.py")
    d = dt.date
    rows: list[tuple[dt.date, str, str]] = []

    def add(days: list[dt.date], event: str, phase: str) -> None:
        rows.extend((day, event, phase) for day in days)

    # 618: presale from late May, the peak on 16–18 June, a hangover after.
    add(_span(d(year, 5, 25), d(year, 6, 15)), "618", "presale")
    add(_span(d(year, 6, 16), d(year, 6, 18)), "618", "peak")
    add(_span(d(year, 6, 19), d(year, 6, 22)), "618", "post")
    # Double 11: presale from late October.
    add(_span(d(year, 10, 24), d(year, 11, 8)), "double11", "presale")
    add(_span(d(year, 11, 9), d(year, 11, 11)), "double11", "peak")
    add(_span(d(year, 11, 12), d(year, 11, 16)), "double11", "post")
    add(_span(d(year, 12, 10), d(year, 12, 12)), "double12", "peak")
    add(_span(d(year, 3, 6), d(year, 3, 8)), "womens_day", "peak")
    add(_span(d(year, 2, 10), d(year, 2, 14)), "valentines", "peak")
    qixi = QIXI[year]
    add(_span(qixi - dt.timedelta(days=4), qixi), "qixi", "peak")
    cny = CHINESE_NEW_YEAR[year]
    add(_span(cny - dt.timedelta(days=21), cny - dt.timedelta(days=1)), "cny", "presale")
    add(_span(cny, cny + dt.timedelta(days=3)), "cny", "closure")
    add(_span(cny + dt.timedelta(days=4), cny + dt.timedelta(days=7)), "cny", "post")
    add(_span(d(year, 10, 1), d(year, 10, 7)), "golden_week", "holiday")
    mid = MID_AUTUMN[year]
    add([mid - dt.timedelta(days=1), mid], "mid_autumn", "holiday")
    return rows


def retail_calendar(start: dt.date, end: dt.date) -> pd.DataFrame:
    """The calendar table (date, event, phase) for every event day in [start, end]."""
    rows = [r for year in range(start.year, end.year + 1) for r in events_of_year(year)
            if start <= r[0] <= end]
    frame = pd.DataFrame(rows, columns=["date", "event", "phase"])
    return frame.sort_values(["date", "event"], ignore_index=True)
