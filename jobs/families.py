"""The three model families as the jobs see them: the training job, the config class and its
default file, and what the summaries print."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from lake.store import Lake
from models.config import FamilyConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@dataclass(frozen=True)
class FamilyJob:
    family: str
    module: str  # the training job: main(config, lake, tracking_uri, config_path, artifact_root, run_tags)
    config_ref: str  # "module:Class"
    headline: tuple[str, ...]  # what the summaries print
    date_word: str  # what the training data's last day is called
    memory: "Footprint"  # what its training job needs in memory, from the size of what it reads

    def job(self):
        return importlib.import_module(self.module)

    def config_class(self) -> type[FamilyConfig]:
        module, name = self.config_ref.split(":")
        return getattr(importlib.import_module(module), name)

    def config(self, path: str | None = None) -> tuple[FamilyConfig, str | None]:
        """The config from `path`, else configs/<family>.yaml, else the defaults; and its path."""
        default = CONFIGS / f"{self.family}.yaml"
        path = path or (str(default) if default.exists() else None)
        cls = self.config_class()
        return (cls.from_yaml(path) if path else cls()), path


@dataclass(frozen=True)
class Footprint:
    """A training job's peak memory (all its processes: the job and its training tasks), as a
    fixed part plus a part per row of the curated table that drives it. Fitted on measured peaks at
    two scales (BENCHMARKS.md, "The daily retrain"); the daily retrain reserves it from Ray so
    families that do not fit on a node together wait for each other instead of running it out of
    memory."""

    table: str
    base_gb: float
    bytes_per_row: float

    def bytes(self, lake: Lake) -> int:
        return int(self.base_gb * 2**30 + self.bytes_per_row * lake.count_rows("curated", self.table))


FAMILY_JOBS = {
    "demand": FamilyJob("demand", "jobs.train_demand", "models.demand.config:DemandConfig",
                        ("wrmsse", "wrmsse_seasonal_naive", "wrmsse_moving_average", "wrmsse_tsb", "wrmsse_oracle",
                         "wrmsse_ratio_best_baseline", "wrmsse_ratio_best_baseline_ci_low",
                         "wrmsse_ratio_best_baseline_ci_high", "wape", "interval_coverage_p10_p90",
                         "interval_coverage_p10_p90_units"), "origin",
                        Footprint("demand_daily", 2.0, 220.0)),
    "matching": FamilyJob("matching", "jobs.train_matching", "models.matching.model:MatchingConfig",
                          ("ndcg_at_10", "ndcg_at_10_popularity", "ndcg_at_10_segment_popularity",
                           "ndcg_at_10_popularity_unseen", "ndcg_at_10_oracle", "ndcg_at_10_diff_best_baseline",
                           "ndcg_at_10_diff_best_baseline_ci_low", "ndcg_at_10_diff_best_baseline_ci_high",
                           "recall_at_10", "candidate_recall", "map_at_10", "catalogue_coverage",
                           "audience_auc_new_sku", "audience_auc_new_sku_segment_popularity"), "data date",
                          Footprint("interactions", 3.5, 215.0)),
    "location": FamilyJob("location", "jobs.train_location", "models.location.config:LocationConfig",
                          ("spearman", "spearman_population_baseline", "spearman_gravity_baseline", "spearman_oracle",
                           "ndcg_at_10", "mape", "stores", "cannibalisation_strength", "cannibalisation_decay_km"),
                          "data date", Footprint("store_daily", 1.0, 10_000.0)),
}
