"""The MLflow registry as the model families use it: one registered model per family
(`quanyu-<family>`), aliases `candidate` and `champion`."""

from __future__ import annotations

from pathlib import Path

import mlflow
from mlflow import MlflowClient

CANDIDATE, CHAMPION = "candidate", "champion"


def registered_name(family: str) -> str:
    return f"quanyu-{family}"


def set_alias(family: str, version: str | int, alias: str, client: MlflowClient | None = None) -> None:
    """Point `models:/quanyu-<family>@<alias>` at `version`."""
    (client or MlflowClient()).set_registered_model_alias(registered_name(family), alias, str(version))


def model_uri(family: str, alias: str = CHAMPION) -> str:
    return f"models:/{registered_name(family)}@{alias}"


def use_experiment(name: str, artifact_root: str | None) -> None:
    """Make `name` the active experiment, creating it with its artifacts under `artifact_root`
    (a local folder or object-store URI) when it does not exist yet."""
    client = MlflowClient()
    if client.get_experiment_by_name(name) is None:
        location = f"{artifact_root.rstrip('/')}/{name}" if artifact_root else None
        if location and "://" not in location:
            location = Path(location).resolve().as_uri()
        client.create_experiment(name, artifact_location=location)
    mlflow.set_experiment(name)
