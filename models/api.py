"""What a family declares of its HTTP API, without naming a web framework: its operations (method,
path, request and response models, the handler, the statuses it can answer) and the rules of its
`/invocations` rows. Serving makes each family's FastAPI app from this (serving/routes.py), so a
new family's endpoints live in its own package (`models/<family>/api.py`) and serving never
names one.

A handler is a plain function `(served, request) -> (status, body)`: `served` holds the loaded
version (`.version`, `.predictor`, `.pyfunc`), `request` the validated request as JSON. The same
functions answer in the Serve replicas, the bare-FastAPI benchmark peer and the tests. A request
the model cannot answer is a 4xx with a message, never a 500.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Callable, Protocol

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from models.errors import BeyondVersion, UnknownName

Answer = tuple[int, dict]

# ids as the lake's contract allows them: printable, no path separators, bounded length
Id = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$")]
CITY_PATTERN = r"^[^\x00-\x1f/\\]+$"  # a name, never a path or control characters
City = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=CITY_PATTERN)]
Finite = Annotated[float, Field(allow_inf_nan=False)]


class Strict(BaseModel):
    """A request model: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


class Served(Protocol):
    """A loaded version as a handler sees it."""

    version: str
    predictor: Any
    pyfunc: Any


@dataclass(frozen=True)
class Operation:
    """One operation of a family's API, under /v1/<family>."""

    method: str  # GET or POST
    path: str  # under the family's prefix
    name: str  # the OpenAPI operation is `<name>_<family>`
    handler: Callable[[Served, dict], Answer]
    response: type[BaseModel]
    request: type[BaseModel] | None = None  # a POST's body, a GET's query parameters
    statuses: tuple[int, ...] = (422, 503)  # what it answers beside 200, auth and body limits
    many: Callable[[Served, list[dict]], list[Answer]] | None = None  # several requests answered together

    @property
    def batched(self) -> bool:
        """Requests that queue together are answered in one call of `many`."""
        return self.many is not None


@dataclass(frozen=True)
class Invocations:
    """The rows of the family's MLflow-protocol `/invocations`: their JSON schema (for the API's
    document), `check(predictor, rows)` that returns the rows to score or raises RowProblem, and
    whether the model answers one row per row in order (then rows of several requests can be
    scored in one predict call and cut apart)."""

    row_schema: dict
    check: Callable[[Any, pd.DataFrame], pd.DataFrame]
    row_per_row: bool


@dataclass(frozen=True)
class FamilyApi:
    operations: tuple[Operation, ...]
    invocations: Invocations


def problem(status: int, detail: Any) -> Answer:
    return status, {"detail": detail}


def invalid(exc: ValidationError) -> Answer:
    """A request that fails its model: 422 with the field-level errors, as FastAPI gives them."""
    return problem(422, exc.errors(include_url=False, include_context=False))


def refused(exc: Exception) -> Answer:
    """A request the served version refused, by the kind of refusal (models/errors.py): 404 for
    a name it does not know, 409 for what it cannot do (days past its horizon, constraints its
    candidates cannot meet), 422 for a request to change; the message says which."""
    if isinstance(exc, (UnknownName, KeyError)):
        return problem(404, str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc))
    return problem(409 if isinstance(exc, BeyondVersion) else 422, str(exc))

