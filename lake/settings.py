"""The brand's settings, kept with its lake in `<lake>/settings.yaml`: facts about the brand that
the data alone does not say. Every field has a default, so a lake without the file works.

    timezone: Asia/Shanghai       # the brand's local time zone (the `dt` partitions are local dates)
    currency: CNY                 # what prices are written in (shown in answers and reports)
    week_start: monday            # first day of the brand's trading week
    max_unit_price: 200000        # a higher price per unit is refused as a unit or decimal error
    future_days: 1                # a raw partition dated more than this many days after today is refused
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

SETTINGS_FILE = "settings.yaml"
DEFAULT_CURRENCY = "CNY"  # the generator's brand's; answers of models trained before settings.yaml say it too


class LakeSettings(BaseModel):
    """The brand settings of one lake."""

    model_config = ConfigDict(extra="forbid")

    timezone: str = Field("Asia/Shanghai", description="IANA time zone of the brand's stores and trading days")
    currency: str = Field(DEFAULT_CURRENCY, pattern=r"^[A-Z]{3}$", description="ISO 4217 code of the prices")
    week_start: Literal["monday", "sunday", "saturday"] = "monday"
    max_unit_price: float = Field(200_000.0, gt=0, description="a price per unit above this is refused as a unit "
                                  "or decimal-point error (rule price_range); raise it for currencies of small "
                                  "units such as JPY or KRW")
    future_days: int = Field(1, ge=0, le=366, description="days after today (in `timezone`) a raw partition "
                             "may be dated; later ones are refused by validation (rule future_partition)")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as Asia/Shanghai or "
                             "Europe/Berlin") from None
        return value

    def today(self) -> dt.date:
        """Today's date in the brand's time zone."""
        return dt.datetime.now(zoneinfo.ZoneInfo(self.timezone)).date()

    def latest_allowed_day(self, today: dt.date | None = None) -> dt.date:
        """The last partition date validation accepts."""
        return (today or self.today()) + dt.timedelta(days=self.future_days)


class SettingsError(ValueError):
    """settings.yaml cannot be read; the message names the file and what to fix."""


def parse_settings(text: str, where: str = SETTINGS_FILE) -> LakeSettings:
    """LakeSettings from the YAML text of a settings file. Raises SettingsError saying what is wrong."""
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise SettingsError(f"{where} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise SettingsError(f"{where} must be a mapping of setting: value (see docs/lake.md, brand settings)")
    try:
        return LakeSettings.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(file)'}: {e['msg']}" for e in exc.errors())
        raise SettingsError(f"{where}: {problems}") from None
