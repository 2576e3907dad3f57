"""Each family's HTTP operations, declared once: path, method, request and response models, the
handler (serving/handlers.py) and the statuses it can answer. `family_api(family)` makes the
family's FastAPI app from its table, plus the MLflow-protocol `/invocations` every family has;
the root app's OpenAPI document is the union of these apps' documents (`merged_openapi`).

Nothing here is specific to one family but the table: a family's app is served at
`/v1/<family>` by its own Serve application (serving/app.py), which calls back into the replica
that holds the model through `serving_replica()`.
"""

# no `from __future__ import annotations`: FastAPI resolves the endpoints' annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query
from pydantic import BaseModel

from serving import http, schemas


@dataclass(frozen=True)
class Route:
    """One operation of a family's API, under /v1/<family>."""

    method: str  # GET or POST
    path: str  # under the family's prefix
    operation: str  # the handler's name in handlers.ROUTES (family, operation)
    response: type[BaseModel] | None  # None: the answer's shape follows the version (MLflow's /invocations)
    request: type[BaseModel] | None = None  # a POST's body, a GET's query parameters
    statuses: tuple[int, ...] = (422, 503)  # what it answers beside 200, auth and body limits
    batched: bool = False  # answered by the replica's batched method of that name (requests that queue together)


ROUTES: dict[str, tuple[Route, ...]] = {
    "demand": (
        Route("POST", "/forecast", "forecasts", schemas.ForecastResponse, schemas.ForecastRequest,
              (404, 409, 422, 503), batched=True),
    ),
    "matching": (
        Route("POST", "/recommend", "recommend", schemas.RecommendResponse, schemas.RecommendRequest),
        Route("POST", "/audience", "audience", schemas.AudienceResponse, schemas.AudienceRequest, (404, 422, 503)),
    ),
    "location": (
        Route("POST", "/recommend", "recommend", schemas.SitesResponse, schemas.SitesRequest, (404, 409, 422, 503)),
        Route("GET", "/cities", "cities", schemas.CitiesResponse, statuses=(503,)),
        Route("GET", "/map", "map", schemas.CityMapResponse, schemas.CityMapRequest, (404, 422, 503)),
    ),
}
INVOCATIONS = Route("POST", "/invocations", "invocations", None, statuses=(404, 409, 422, 503), batched=True)

_replica: dict[str, Any] = {}


def serve_from(replica: Any) -> None:
    """The object that answers this process's family routes (`await replica.answer(route,
    payload)`): the replica calls it once, when it starts."""
    _replica["self"] = replica


def serving_replica() -> Any:
    return _replica["self"]


def _endpoint(route: Route):
    """The FastAPI endpoint of a route: the validated request, as JSON, to the replica."""

    async def call(payload: dict) -> Any:
        return http.answer(await serving_replica().answer(route, payload))

    if route is INVOCATIONS:
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
    endpoint.__name__ = route.operation
    return endpoint


def family_api(family: str) -> FastAPI:
    """The FastAPI app of one family: its routes and /invocations, behind the API keys."""
    api = http.new_api(f"Quanyu {family}")
    for route in (*ROUTES[family], INVOCATIONS):
        extra = {}
        if route is INVOCATIONS:
            extra = {"openapi_extra": {"requestBody": schemas.invocations_body(family)},
                     "summary": f"{family.title()} Invocations"}
        api.add_api_route(route.path, _endpoint(route), methods=[route.method],
                          response_model=route.response,
                          dependencies=[Depends(http.require_key)],
                          responses=http.responses(*route.statuses, body=route.method == "POST"),
                          operation_id=f"{route.operation}_{family}", **extra)
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
