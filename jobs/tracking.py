"""What every family's training job does with MLflow: one run with the shared tags, params and
metrics, the tables it read as dataset inputs, and the registered pyfunc with the alias
`candidate`. The jobs add only what is theirs (plots, extra tags and params, the model folder)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pandas as pd
from pydantic import BaseModel

from lake.store import Lake
from models.registry import CANDIDATE, Registry, registered_name, set_alias, use_experiment

REPO = Path(__file__).resolve().parents[1]
# what every family's pyfunc needs besides Python; families add theirs (scipy, h3)
BASE_PACKAGES = ("lightgbm", "pandas", "pyarrow", "pydantic", "numpy")


@dataclass
class TrainResult:
    run_id: str
    version: str
    metrics: dict[str, float] = field(default_factory=dict)
    origin: dt.date | None = None
    seconds: float = 0.0


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def flatten(prefix: str, value) -> dict[str, str]:
    """Nested config → MLflow params: dotted keys, lists as JSON."""
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for k, v in value.items():
            out.update(flatten(f"{prefix}.{k}" if prefix else k, v))
        return out
    return {prefix: json.dumps(value) if isinstance(value, (list, tuple)) else str(value)}


def package_version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


@contextmanager
def family_run(family: str, tracking_uri: str, artifact_root: str | None, run_name: str, config: BaseModel,
               tags: dict, params: dict, metrics: dict[str, float]) -> Iterator[object]:
    """An MLflow run in the family's experiment with its tags (family, git commit and `tags`), the
    config flattened plus `params` as params, and `metrics`; yields the run."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    use_experiment(f"quanyu-{family}", artifact_root)
    with mlflow.start_run(run_name=run_name) as run:
        mlflow.set_tags({"family": family, "git_commit": git_commit(), "config": config.model_dump_json(),
                         **lake_range(tags.get("lake"), tags.get("lake_commit")), **tags})
        mlflow.log_params({**flatten("", config.model_dump(mode="json")), **params})
        mlflow.log_metrics(metrics)
        yield run


def lake_range(root: str | None, commit: str | None = None) -> dict[str, str]:
    """The first and last day of the curated sales a run read (at lake commit `commit`): lineage tags."""
    if not root:
        return {}
    days = Lake(root, int(commit) if commit else None).partitions("curated", "sales_lines")
    return {"lake_first_dt": str(min(days)), "lake_last_dt": str(max(days))} if days else {}


# the run tags every registered version carries, so a version says what made it on its own
LINEAGE_TAGS = ("family", "git_commit", "config", "config_path", "lake", "lake_commit", "lake_snapshots",
                "lake_first_dt", "lake_last_dt",
                "data_date", "mlflow.parentRunId", "retrain_date")


def log_inputs(lake: Lake, tables: list[tuple[str, pd.DataFrame, str]]) -> None:
    """Each (table, frame, zone) as a dataset input of the active run, with a digest of every row
    (see frame_digest) and the frame's column types as its schema."""
    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    with warnings.catch_warnings():  # MLflow's hint about path sources
        warnings.simplefilter("ignore", UserWarning)
        for name, frame, zone in tables:
            dataset = MetaDataset(resolve_dataset_source(str(lake.table_dir(zone, name))), name=name,
                                  digest=frame_digest(frame), schema=frame_schema(frame))
            mlflow.log_input(dataset, context="training", tags={"rows": str(len(frame))})


def frame_digest(frame: pd.DataFrame) -> str:
    """A digest of every row of `frame` (vectorised hashing: seconds at medium scale). MLflow's own
    pandas dataset digests only the first 10,000 rows, and checks every value's type and nullness
    in Python first, which took minutes for the 69M-row demand frame. Ids held as categoricals
    hash as their strings do."""
    import hashlib

    rows = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    header = json.dumps([list(map(str, frame.columns)), len(frame)]).encode()
    return hashlib.md5(header + rows.tobytes()).hexdigest()[:8]


def frame_schema(frame: pd.DataFrame):
    """The MLflow schema of `frame` from its column types, a column required when it has no nulls
    (vectorised checks, no Python pass over the values)."""
    from mlflow.types import ColSpec, DataType, Schema

    def kind(dtype) -> DataType:
        if pd.api.types.is_bool_dtype(dtype):
            return DataType.boolean
        if pd.api.types.is_integer_dtype(dtype):
            return DataType.integer if dtype.itemsize <= 4 else DataType.long
        if pd.api.types.is_float_dtype(dtype):
            return DataType.float if dtype.itemsize <= 4 else DataType.double
        if pd.api.types.is_datetime64_any_dtype(dtype):
            return DataType.datetime
        return DataType.string  # strings, categorical ids, dates held as objects

    return Schema([ColSpec(kind(frame[c].dtype), str(c), required=not frame[c].isna().any()) for c in frame.columns])


def register(family: str, python_model, artifacts: dict[str, str], input_example: pd.DataFrame | None = None,
             packages: tuple[str, ...] = (), inputs=None) -> str:
    """Log the family's pyfunc (its code: models/ and lake/), register it as quanyu-<family> and
    point `candidate` at the new version; returns the version. `inputs`: the input schema
    (mlflow.types.Schema) when the example alone would make optional columns required."""
    import mlflow
    from mlflow.models import ModelSignature

    with warnings.catch_warnings(), _known_mlflow_notices_dropped():
        warnings.simplefilter("ignore", UserWarning)  # the input example's integer columns: a hint about missing values
        info = mlflow.pyfunc.log_model(
            name="model", python_model=python_model, artifacts=artifacts,
            code_paths=[str(REPO / "models"), str(REPO / "lake")], registered_model_name=registered_name(family),
            input_example=input_example, signature=ModelSignature(inputs=inputs) if inputs is not None else None,
            pip_requirements=[f"{p}=={package_version(p)}" for p in (*BASE_PACKAGES, *packages)])
    version = str(info.registered_model_version)
    _record_lineage(family, version)
    _tag_if_below_baseline(family, version)
    set_alias(family, version, CANDIDATE)
    return version


# What MLflow says on every registration that a Quanyu user can do nothing about (train prints the
# version it registered, and why a pyfunc's signature is what it is, in one line of its own):
# - "Passing a Python object as `python_model` … CloudPickle": the pickled object is a stateless
#   wrapper; the version's code travels as code_paths and its state as plain files (no pickle);
# - "Failed to infer model signature: Type hint …" and "Inferring model signature …": the demand
#   pyfunc takes rows whose optional columns a signature cannot say; the others infer theirs;
# - "Successfully registered model", "… already exists. Creating a new version", "Created version":
#   printed to stderr by the registry's fluent API; train says the same in one line.
KNOWN_MLFLOW_NOTICES = ("Passing a Python object as `python_model`", "Failed to infer model signature",
                        "Inferring model signature", "Successfully registered model", "Registered model ",
                        "Created version ")


@contextmanager
def _known_mlflow_notices_dropped() -> Iterator[None]:
    """Drops MLflow's KNOWN_MLFLOW_NOTICES (log records and stderr lines) while registering; any
    other line MLflow writes still reaches stderr."""
    import io
    import logging
    import sys
    from contextlib import redirect_stderr

    def known(text: str) -> bool:
        return any(text.startswith(n) for n in KNOWN_MLFLOW_NOTICES)

    class Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return not known(record.getMessage())

    loggers = [logging.getLogger(name) for name in ("mlflow.pyfunc", "mlflow.models.model", "mlflow.models.signature")]
    drop, captured = Drop(), io.StringIO()
    for logger in loggers:
        logger.addFilter(drop)
    try:
        with redirect_stderr(captured):
            yield
    finally:
        for logger in loggers:
            logger.removeFilter(drop)
        for line in captured.getvalue().splitlines():
            if line.strip() and not known(line.strip()):
                print(line, file=sys.stderr)


def _tag_if_below_baseline(family: str, version: str) -> None:
    """Tag the version `below_baseline` (with why) when the active run's metrics do not beat the
    baselines of the family's gate: a candidate that loses to popularity or a moving average says
    so on the version itself, before any gate looks at it."""
    import mlflow

    from jobs.promotion import below_baseline

    registry = Registry()
    why = below_baseline(family, registry.client.get_run(mlflow.active_run().info.run_id).data.metrics)
    if why:
        registry.tag(family, version, "below_baseline", why)


def _record_lineage(family: str, version: str) -> None:
    """Copy the active run's lineage (lake days, dataset digests, git commit, config) onto the
    model version."""
    import mlflow

    registry = Registry()
    run = registry.client.get_run(mlflow.active_run().info.run_id)
    lineage = {k: v for k, v in run.data.tags.items() if k in LINEAGE_TAGS}
    datasets = {d.dataset.name: d.dataset.digest for d in run.inputs.dataset_inputs}
    lineage["datasets"] = json.dumps(datasets, sort_keys=True)
    for key, value in lineage.items():
        registry.tag(family, version, key.replace("mlflow.", ""), value)
