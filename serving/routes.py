"""Each family's FastAPI app, made from the operations its package declares (models/<family>/api.py:
path, method, request and response models, the handler and the statuses it can answer), plus the
MLflow-protocol `/invocations` every family has; the root app's OpenAPI document is the union of
these apps' documents (`merged_openapi`).

Nothing here names a family: a family's app is served at
`/v1/<family>` by its own Serve application (serving/app.py), which calls back into the replica
that holds the model through `serving_replica()`.
"""

# no `from __future__ import annotations`: FastAPI resolves the endpoints' annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query

from models.api import Operation
from models.families import family as registered
from serving import http, schemas

INVOCATIONS = Operation("POST", "/invocations", "invocations", None, None,  # type: ignore[arg-type]
                        statuses=(404, 409, 422, 503))  # its handler is the replica's: serving/handlers.py


def operations(family: str) -> tuple[Operation, ...]:
    """The family's operations (its package's models/<family>/api.py) and /invocations."""
    return (*registered(family).api().operations, INVOCATIONS)


_replica: dict[str, Any] = {}


def serve_from(replica: Any) -> None:
    """The object that answers this process's family routes (`await replica.answer(route,
    payload)`): the replica calls it once, when it starts."""
    _replica["self"] = replica


def serving_replica() -> Any:
    return _replica["self"]


def _endpoint(route: Operation):
    """The FastAPI endpoint of a route: the validated request, as JSON, to the replica."""

    async def call(payload: dict) -> Any:
        return http.answer(await serving_replica().answer(route, payload))

    if route == INVOCATIONS:
        async def endpoint(payload: dict[str, Any]):
            return await call(payload)
    elif route.request is None:
        async def endpoint():
            return await call({})
    elif route.method == "GET":
        async def endpoint(query: Annotated[route.request, Query()]):
            return await call(query.model_dump(mode="json"))
    else:
        async def endpoint(request: route.request):
            return await call(request.model_dump(mode="json"))
    endpoint.__name__ = route.name
    return endpoint


def family_api(family: str) -> FastAPI:
    """The FastAPI app of one family: its routes and /invocations, behind the API keys."""
    api = http.new_api(f"Quanyu {family}")
    for route in operations(family):
        extra = {}
        if route == INVOCATIONS:
            extra = {"openapi_extra": {"requestBody": schemas.invocations_body(family)},
                     "summary": f"{family.title()} Invocations"}
        api.add_api_route(route.path, _endpoint(route), methods=[route.method],
                          response_model=route.response,
                          dependencies=[Depends(http.require_key)],
                          responses=http.responses(*route.statuses, body=route.method == "POST"),
                          operation_id=f"{route.name}_{family}", **extra)
    return api


def merged_openapi(root: FastAPI, families: tuple[str, ...]) -> dict:
    """The whole API's document: the root app's operations and each family's, under /v1/<family>.
    A component two apps define differently is an error, not a silent overwrite."""
    from fastapi.openapi.utils import get_openapi

    document = get_openapi(title=root.title, version=root.version, description=root.description, routes=root.routes)
    schemas_ = document.setdefault("components", {}).setdefault("schemas", {})
    for family in families:
        api = family_api(family)
        part = get_openapi(title=api.title, version=api.version, routes=api.routes)
        for path, operations in part["paths"].items():
            document["paths"][f"/v1/{family}{path}"] = operations
        for name, schema in part.get("components", {}).get("schemas", {}).items():
            if schemas_.setdefault(name, schema) != schema:
                raise ValueError(f"the OpenAPI component {name!r} differs between the apps: rename one of the models")
        for name, scheme in part.get("components", {}).get("securitySchemes", {}).items():
            document["components"].setdefault("securitySchemes", {})[name] = scheme
    return document
