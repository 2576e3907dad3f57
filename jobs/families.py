"""The model families as the jobs see them: each family of the registry (models/families.py)
with its training job, `jobs/train_<family>.py`."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from models.config import FamilyConfig
from models.families import FAMILIES
from models.family import Family, Footprint


@dataclass(frozen=True)
class FamilyJob:
    family: Family

    @property
    def name(self) -> str:
        return self.family.name

    @property
    def module(self) -> str:
        """The training job: main(config, lake, tracking_uri, config_path, artifact_root, run_tags)."""
        return f"jobs.train_{self.family.name}"

    @property
    def headline(self) -> tuple[str, ...]:
        return self.family.headline

    @property
    def date_word(self) -> str:
        return self.family.date_word

    @property
    def memory(self) -> Footprint:
        return self.family.memory

    def job(self):
        return importlib.import_module(self.module)

    def config_class(self) -> type[FamilyConfig]:
        return self.family.config_class()

    def config(self, path: str | None = None) -> tuple[FamilyConfig, str | None]:
        return self.family.config(path)


FAMILY_JOBS = {name: FamilyJob(family) for name, family in FAMILIES.items()}
