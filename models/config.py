"""What every family's configuration shares: strict pydantic models read from YAML."""

from __future__ import annotations

from pathlib import Path
from typing import Self

import yaml
from pydantic import BaseModel, ConfigDict


class FamilyConfig(BaseModel):
    """A family's whole configuration; unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def from_yaml(cls, path: str | Path) -> Self:
        """Parse a YAML file. Raises ValueError naming the file when it does not fit."""
        text = Path(path).read_text()
        try:
            return cls.model_validate(yaml.safe_load(text) or {})
        except Exception as exc:  # pydantic's message lists every wrong key
            raise ValueError(f"{path}: {exc}") from None
