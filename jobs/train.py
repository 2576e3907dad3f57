"""Job: train one family and register a candidate version — the same job for every family.

1. read the family's inputs from the lake through the catalogue (jobs/catalogue.py), as the
   family declares them (`models/<family>/training.py: inputs`), and let it prepare its data;
2. the family evaluates against its baselines and fits its production model (`train`), on this
   cluster's executor (Ray tasks when Ray is up);
3. log to MLflow what it handed back: params, its report's metrics (and its tables, as CSV), the
   digests of the tables it learned from, plots and files, tags (lake, config, as-of day, the
   lake commit and each curated table's snapshot it read, the retrain's parent run);
4. register its pyfunc as `quanyu-<family>` and point the alias `candidate` at it.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

from jobs import catalogue
from jobs.runtime import executor
from jobs.tracking import TrainResult, family_run, log_inputs, register
from lake.store import Lake
from models.config import FamilyConfig
from models.families import family as registered


def read(family: str, config: FamilyConfig, lake: Lake, as_of: dt.date | None = None, lineage: dict | None = None):
    """The family's data, prepared from its inputs as the lake holds them (up to `as_of`);
    `lineage`, when given, receives the lake commit and each curated table's snapshot read."""
    training = registered(family).training()
    lake = pinned(lake)
    frames = catalogue.read(lake, training.inputs(config), as_of)
    if lineage is not None and lake.commit is not None:
        lineage.update(lake_commit=str(lake.commit), lake_snapshots=json.dumps(frames.snapshots, sort_keys=True))
    return training.prepare(frames, config)


def pinned(lake: Lake) -> Lake:
    """`lake` at the commit it is pinned to, else at its latest commit now: every input of a
    training from the same commit, even while a merge commits."""
    if lake.commit is not None:
        return lake
    record = lake.tables.commit_record()
    return lake.at(record.id) if record else lake


def holdout_metrics(family: str, config: FamilyConfig, lake: Lake) -> dict[str, float]:
    """The evaluation's metrics of `config` on the lake, without fitting the production model,
    logging or registering: how the retrain's gate re-scores a champion's recipe."""
    training = registered(family).training()
    return training.holdout(read(family, config, lake), config, executor()).finite


def main(family: str, config: FamilyConfig, lake: Lake, tracking_uri: str, config_path: str | None = None,
         artifact_root: str | None = None, run_tags: dict | None = None, as_of: dt.date | None = None) -> TrainResult:
    """Train, evaluate, log and register. With `as_of`, on the lake as it was that day (a
    backtest: `quanyu predict demand --as-of` the same day, then compare with the days that
    followed)."""
    import mlflow

    training = registered(family).training()
    started = time.monotonic()

    def say(line: str) -> None:
        print(f"train {family}: {line} [{time.monotonic() - started:.0f} s]", file=sys.stderr, flush=True)

    lineage: dict[str, str] = {}
    data = read(family, config, lake, as_of, lineage)
    with tempfile.TemporaryDirectory(prefix=f"quanyu-{family}-") as scratch:
        trained = training.train(data, config, executor(), Path(scratch), say)
        metrics = trained.report.finite
        tags = {"lake": str(lake.root), "config_path": config_path or "defaults",
                **({"as_of": str(as_of)} if as_of else {}), **lineage, **trained.tags, **(run_tags or {})}
        with family_run(family, tracking_uri, artifact_root, f"{family} {trained.origin}", config, tags,
                        trained.params, metrics) as run:
            log_inputs(lake, trained.learned_from)
            for path in trained.files:
                mlflow.log_artifact(str(path), artifact_path="plots" if path.suffix == ".png" else None)
            for name, table in trained.report.tables.items():
                table.to_csv(Path(scratch) / f"{name}.csv", index=False)
                mlflow.log_artifact(str(Path(scratch) / f"{name}.csv"))
            version = register(family, trained.python_model, trained.artifacts, trained.example, trained.packages,
                               trained.signature_inputs)
    return TrainResult(run_id=run.info.run_id, version=version, metrics=metrics, origin=trained.origin,
                       seconds=round(time.monotonic() - started, 1))
