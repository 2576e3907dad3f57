"""The MLflow registry as the model families use it: one registered model per family
(`quanyu-<family>`), aliases `candidate` and `champion`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

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


@dataclass(frozen=True)
class LoadedVersion:
    """A registered version loaded through its own code: the pyfunc MLflow loaded and the
    family's predictor inside it (checked against the family's contract)."""

    family: str
    version: str
    run_id: str | None
    pyfunc: Any
    predictor: Any
    path: str | None = None  # the local copy of its artifacts, when load_version was told where


def load_version(family: str, tracking_uri: str | None = None, *, alias: str | None = None,
                 version: str | int | None = None, download_to: str | Path | None = None,
                 loader: Callable[[str], Any] | None = None) -> LoadedVersion:
    """The one way jobs, serving and benchmarks get a family's model from the registry: the
    version `alias` points at (looked up once, so a moving alias cannot mix two versions) or the
    numbered `version`, loaded as MLflow loads it (its pyfunc, its logged code on sys.path; in a
    process that already imported Quanyu's `models`, those modules answer) and its predictor taken
    through the family's contract — the same path serving, batch scoring and the gate take, so
    one version answers alike in all three.
    `tracking_uri` (else the current one) becomes the current one: MLflow resolves `models:/`
    URIs there. `download_to`: copy its artifacts into that folder first and load from there
    (workers then load the same copy with load_local). `loader` replaces
    mlflow.pyfunc.load_model.
    Raises MlflowException when the alias or version does not exist, IncompatibleVersion when
    the version speaks another predictor contract."""
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient()
    name = registered_name(family)
    if version is None:
        version = client.get_model_version_by_alias(name, alias or CHAMPION).version
    info = client.get_model_version(name, str(version))
    uri = f"models:/{name}/{version}"
    path = None
    if download_to is not None:
        path = mlflow.artifacts.download_artifacts(uri, dst_path=str(download_to))
        uri = path
    pyfunc = (loader or mlflow.pyfunc.load_model)(uri)
    return LoadedVersion(family, str(version), info.run_id, pyfunc, _predictor(family, pyfunc), path)


def load_local(family: str, path: str | Path) -> Any:
    """The predictor of a version whose artifacts load_version(download_to=…) copied to `path`."""
    return _predictor(family, mlflow.pyfunc.load_model(str(path)))


def _predictor(family: str, pyfunc) -> Any:
    from models.families import family as family_of  # the registry of families imports every package

    return family_of(family).predictor(pyfunc)
