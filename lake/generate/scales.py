"""Scale presets of the synthetic lake. Sizes are targets for the number of sales lines."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field


class Scale(BaseModel):
    """How big a generated lake is. `target_lines` calibrates the demand level."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    cities: int = Field(ge=1, le=30)
    stores_per_city: int = Field(ge=1)
    skus: int = Field(ge=10)
    consumers: int = Field(ge=100, description="people who buy; members are a share of them")
    site_ring: int = Field(ge=1, description="candidate sites: H3 cells within this ring of the centre")
    days: int = Field(ge=28)
    start: dt.date
    target_lines: int = Field(ge=1000)
    chunk_days: int = Field(ge=1, description="days per generation task")


SCALES: dict[str, Scale] = {
    s.name: s
    for s in (
        Scale(name="tiny", cities=2, stores_per_city=4, skus=60, consumers=3_000, site_ring=6,
              days=240, start=dt.date(2025, 1, 1), target_lines=120_000, chunk_days=60),
        Scale(name="small", cities=4, stores_per_city=8, skus=400, consumers=60_000, site_ring=9,
              days=730, start=dt.date(2024, 11, 1), target_lines=5_000_000, chunk_days=61),
        # a brand with many stores and a small catalogue: what the location family learns from
        Scale(name="chain", cities=30, stores_per_city=20, skus=60, consumers=60_000, site_ring=8,
              days=400, start=dt.date(2025, 1, 1), target_lines=1_500_000, chunk_days=100),
        Scale(name="medium", cities=10, stores_per_city=14, skus=2_000, consumers=500_000, site_ring=12,
              days=730, start=dt.date(2024, 11, 1), target_lines=50_000_000, chunk_days=31),
        Scale(name="large", cities=30, stores_per_city=20, skus=5_000, consumers=5_000_000, site_ring=16,
              days=730, start=dt.date(2024, 11, 1), target_lines=500_000_000, chunk_days=14),
    )
}


def get_scale(name: str, *, start: dt.date | None = None, days: int | None = None) -> Scale:
    """A preset by name, optionally with another start date or length. Raises ValueError."""
    if name not in SCALES:
        raise ValueError(f"unknown scale {name!r}; choose one of {', '.join(SCALES)}")
    scale = SCALES[name]
    changes: dict[str, object] = {}
    if start is not None:
        changes["start"] = start
    if days is not None:
        if days < 28:
            raise ValueError(f"--days must be at least 28 (one forecast horizon), got {days}")
        # keep the number of lines per day as the preset has it
        changes["days"] = days
        changes["target_lines"] = max(1000, round(scale.target_lines * days / scale.days))
    return scale.model_copy(update=changes) if changes else scale
