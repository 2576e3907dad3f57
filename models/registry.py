"""The MLflow registry as the model families use it: one registered model per family
(`quanyu-<family>`), aliases `candidate` and `champion`."""

from __future__ import annotations

from mlflow import MlflowClient

CANDIDATE, CHAMPION = "candidate", "champion"


def registered_name(family: str) -> str:
    return f"quanyu-{family}"


def set_alias(family: str, version: str | int, alias: str, client: MlflowClient | None = None) -> None:
    """Point `models:/quanyu-<family>@<alias>` at `version`."""
    (client or MlflowClient()).set_registered_model_alias(registered_name(family), alias, str(version))


def model_uri(family: str, alias: str = CHAMPION) -> str:
    return f"models:/{registered_name(family)}@{alias}"
