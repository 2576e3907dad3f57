import datetime as dt

import pytest

from lake.calendar import events_of_year, retail_calendar


def test_events_of_2025_include_the_big_festivals_and_cny_closure():
    rows = {(d, e, p) for d, e, p in events_of_year(2025)}
    assert (dt.date(2025, 11, 11), "double11", "peak") in rows
    assert (dt.date(2025, 6, 18), "618", "peak") in rows
    assert (dt.date(2025, 1, 29), "cny", "closure") in rows  # Chinese New Year 2025
    assert (dt.date(2025, 8, 29), "qixi", "peak") in rows
    assert (dt.date(2025, 10, 24), "double11", "presale") in rows


def test_calendar_is_sorted_and_clipped_to_the_range():
    frame = retail_calendar(dt.date(2025, 6, 1), dt.date(2025, 6, 30))
    assert frame["date"].min() >= dt.date(2025, 6, 1) and frame["date"].max() <= dt.date(2025, 6, 30)
    assert list(frame["date"]) == sorted(frame["date"])
    assert set(frame["event"]) == {"618"}


def test_unsupported_year_raises_with_a_hint():
    with pytest.raises(ValueError, match="add its lunar dates"):
        events_of_year(2031)
