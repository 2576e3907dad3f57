"""What a family's training declares and hands back, without reading a lake or talking to MLflow:
the named tables it reads (`Input`, read by the jobs' catalogue, jobs/catalogue.py) and what it
trained (`Trained`: the model to register and what to log beside it). One generic job
(jobs/train.py) reads the inputs, calls the family, logs and registers; a family's
`models/<family>/training.py` is a module with:

    inputs(config, holdout: bool) -> dict[str, Input]  the tables, by the name `prepare` reads them
    prepare(frames, config) -> data                     the family's data from the frames
    train(data, config, executor, folder, say) -> Trained
    holdout(data, config, executor) -> Report           the evaluation alone (models/report.py): the
                                                        retrain's gate re-scores a champion's recipe with it
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from models.report import Report


@dataclass(frozen=True)
class Input:
    """One table of the lake a family reads.

    `days`: of a table partitioned by day, only the last `days` days (of its own partitions, up to
    the training's as-of day); None: every day. `needed`: when the lake lacks the table, the hint
    of the error that says so (None: an optional input, absent as None). `contract`: a raw table
    with every optional column of the lake's contract (nulls where the brand has none), so a family
    never trips over a column a brand does not provide."""

    zone: str
    table: str
    columns: tuple[str, ...] | None = None
    days: int | None = None
    needed: str | None = None
    contract: bool = False
    keep_extra: bool = False  # with `contract`: the brand's own extra columns too
    categorical: bool = False  # strings as categoricals (ids: 4 bytes a row instead of 44)
    json: str | None = None  # a JSON document kept in the table's folder instead of its rows


@dataclass
class Trained:
    """What a family's training hands the job to log and register."""

    origin: dt.date  # the last day of the data it learned from
    report: Report  # its evaluation: metrics logged, tables written as CSV
    params: dict[str, Any]
    tags: dict[str, str]
    python_model: Any  # the pyfunc (mlflow.pyfunc.PythonModel) that loads the artifacts
    artifacts: dict[str, str]  # name → a path under the job's folder
    learned_from: list[tuple[str, pd.DataFrame, str]]  # (table, frame, zone): digests logged as the run's inputs
    files: list[Path] = field(default_factory=list)  # .png under plots/, the rest at the run's root
    example: pd.DataFrame | None = None  # an input example of the pyfunc
    packages: tuple[str, ...] = ()  # pip packages beyond the base ones
    signature_inputs: Any = None  # mlflow.types.Schema when the example alone would make optional columns required


def last_day(frames: dict, name: str) -> dt.date:
    """The last day of a partitioned input: the catalogue's record of its partitions, else (frames
    made by hand, in a notebook) its latest `dt`."""
    days = getattr(frames, "days", {}).get(name)
    return days[-1] if days else max(frames[name]["dt"])
