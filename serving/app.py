"""The Ray Serve application: one FastAPI ingress in front of one deployment per model family.

    client ──HTTP──▶ Ingress (auth, validation, body limit) ──handle──▶ Family[demand|matching|location]

Each Family replica follows `models:/quanyu-<family>@<alias>` (serving/families.py): it polls
the registry, loads a moved alias beside the served version, smoke-tests it and swaps it in, so
no request fails during a swap; a version that fails to load never replaces the one serving.

`build(args)` is the application builder used by `quanyu serve` and by `serve deploy
configs/serve.yaml` alike.
"""

# no `from __future__ import annotations`: FastAPI resolves the route annotations in the replica,
# where Serve ships the ingress class by value and string annotations cannot be resolved

import asyncio
import base64
import hashlib
import hmac
import logging
import os
import re
import time
from typing import Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ValidationError
from ray import serve
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
from ray.serve.handle import DeploymentHandle

from serving import handlers, planner, schemas
from serving.families import FAMILIES, FamilyModel, Poller

logger = logging.getLogger("quanyu.serving")
MAX_BODY_BYTES = 1_000_000


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


FORECAST_BATCH = 16  # forecast requests one demand replica answers together at most
INVOCATIONS_BATCH = 16  # /invocations requests one replica scores together at most
HEALTH_GRACE_S = 30.0  # a replica without its champion passes health checks this long after its start
STATUS_TIMEOUT_S = 5.0  # /v1/models waits this long for a family's replicas
RETRY_ELSEWHERE = "retry_elsewhere"  # in a family's 503: this replica lacks a champion another one holds


# every protected operation documents its 401 (a missing, malformed or wrong key); every one that
# takes a body, its 400 (not UTF-8 JSON, or nested too deeply) and 413 (over MAX_BODY_BYTES)
PROTECTED = {401: {"model": schemas.Problem, "description": "missing or invalid API key"}}
WITH_BODY = {**PROTECTED, 400: {"model": schemas.Problem, "description": "the body is not JSON in UTF-8, or is nested "
                                "too deeply"},
             413: {"model": schemas.Problem, "description": f"the body is over {MAX_BODY_BYTES:,} bytes"}}
# a valid request past what the served version does (days beyond its horizon, constraints no
# candidate sites meet): the schema cannot say, since it follows the version (models/errors.py)
BEYOND = {409: {"model": schemas.Problem, "description": "beyond what the served version can answer; the "
                "message says what it can (its forecast horizon, the sites that meet the constraints)"}}


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=32, health_check_period_s=2)
class Family:
    """One model family's served version, following its alias."""

    def __init__(self, family: str, tracking_uri: str, alias: str = "champion", poll_seconds: float = 10.0) -> None:
        self.family = family
        self.started = time.monotonic()
        self.model = FamilyModel(family, tracking_uri, alias)
        self.model.check()
        if self.model.current is None and self.model.store_down:
            # a replica that cannot read the registry would only answer 503: fail its start instead,
            # so that Serve retries it while the replicas that have a model keep serving
            raise RuntimeError(f"quanyu-{family}: {self.model.last_error}; Serve starts this replica again")
        self.poller = Poller(self.model, poll_seconds).start()

    def _unavailable(self) -> tuple[int, dict]:
        body = {"detail": f"quanyu-{self.family} has no loaded version yet "
                          f"({self.model.last_error or 'still loading'}); retry shortly"}
        if self.model.champion is not None:  # another replica may hold the champion: the ingress asks it
            body[RETRY_ELSEWHERE] = True
        return 503, body

    def check_health(self) -> None:
        """Serve's health check: a replica without the family's champion (its load failed) is
        unhealthy once it is HEALTH_GRACE_S old, so Serve replaces it and stops routing to it
        (meanwhile its 503s are retried on other replicas by the ingress). The grace lets an
        application whose champion no replica can load still deploy: its other families serve,
        and /v1/models says what is wrong with this one."""
        if not self.model.ready and time.monotonic() - self.started > HEALTH_GRACE_S:
            raise RuntimeError(f"quanyu-{self.family} holds no version of its champion v{self.model.champion}: "
                               f"{self.model.last_error}")

    def call(self, operation: str, request: dict) -> tuple[int, dict]:
        loaded = self.model.current  # one read: a swap during this request does not affect it
        if loaded is None:
            return self._unavailable()
        try:
            return handlers.ROUTES[(self.family, operation)](loaded, request)
        except ValidationError as exc:
            return 422, {"detail": exc.errors(include_url=False, include_context=False)}
        except Exception:  # a bug, not the caller's fault: log it, say nothing internal
            logger.exception("quanyu-%s %s failed", self.family, operation)
            return 500, {"detail": handlers.internal_error(self.family)}

    @serve.batch(max_batch_size=FORECAST_BATCH, batch_wait_timeout_s=0.0)
    async def forecasts(self, requests: list[dict]) -> list[tuple[int, dict]]:
        """Forecast requests answered together: whatever queued while the previous batch was
        computed (no waiting: at concurrency 1 a batch is one request) gets one feature build
        and one booster call."""
        loaded = self.model.current
        if loaded is None:
            return [self._unavailable() for _ in requests]
        try:
            return handlers.forecasts(loaded, requests)
        except Exception:  # a bug, not the callers' fault: log it, say nothing internal
            logger.exception("quanyu-%s forecast batch of %d failed", self.family, len(requests))
            return [(500, {"detail": handlers.internal_error(self.family)})
                    for _ in requests]

    @serve.batch(max_batch_size=INVOCATIONS_BATCH, batch_wait_timeout_s=0.0)
    async def invocations(self, payloads: list[dict]) -> list[tuple[int, dict]]:
        """MLflow-protocol requests answered together: for a family whose model answers row per
        row (handlers.ROW_PER_ROW), the rows of whatever queued are scored in one predict call."""
        loaded = self.model.current
        if loaded is None:
            return [self._unavailable() for _ in payloads]
        try:
            return handlers.invocations_many(loaded, self.family, payloads)
        except Exception:  # a bug, not the callers' fault: log it, say nothing internal
            logger.exception("quanyu-%s invocations batch of %d failed", self.family, len(payloads))
            return [(500, {"detail": handlers.internal_error(self.family)})
                    for _ in payloads]

    def status(self) -> dict:
        return self.model.status()

    def reload(self) -> dict:
        self.model.check()
        return self.model.status()


api = FastAPI(title="Quanyu", version="1", docs_url=None, redoc_url=None, description=(
    "Forecasts, recommendations, audiences and site recommendations from the champion of each model "
    "family. Every /v1 endpoint needs `Authorization: Bearer <key>`."))


def _openapi() -> dict:
    """FastAPI's document, with the one invocations route written as an operation per family
    (each with its rows' schema: schemas.split_invocations)."""
    if api.openapi_schema is None:
        api.openapi_schema = schemas.split_invocations(FastAPI.openapi(api), FAMILIES)
    return api.openapi_schema


api.openapi = _openapi

SWAGGER_CDN = "https://cdn.jsdelivr.net"  # where FastAPI's Swagger UI page loads its script and style


def docs_page() -> HTMLResponse:
    """FastAPI's Swagger UI page with a Content-Security-Policy: its script and style from the one
    CDN FastAPI names, its inline script by hash, requests only to this server, no framing."""
    page = get_swagger_ui_html(openapi_url="/openapi.json", title="Quanyu API")
    html = page.body.decode()
    inline = [hashlib.sha256(script.encode()).digest() for script in re.findall(r"<script>(.*?)</script>", html, re.S)]
    hashes = " ".join(f"'sha256-{base64.b64encode(h).decode()}'" for h in inline)
    csp = (f"default-src 'none'; script-src {SWAGGER_CDN} {hashes}; style-src {SWAGGER_CDN}; "
           "img-src 'self' data: https://fastapi.tiangolo.com; connect-src 'self'; frame-ancestors 'none'")
    return HTMLResponse(html, headers={"Content-Security-Policy": csp, "X-Content-Type-Options": "nosniff"})
_bearer = HTTPBearer(auto_error=False)
_settings: dict[str, Any] = {"keys": set(), "admin_keys": set()}


def _check(credentials: HTTPAuthorizationCredentials | None, digests: set[str]) -> None:
    supplied = key_digest(credentials.credentials) if credentials else ""
    # compare against every digest in constant time, whatever matches first
    ok = False
    for digest in digests:
        ok |= hmac.compare_digest(supplied, digest)
    if not ok:
        raise _Unauthorized()


class _Unauthorized(Exception):
    pass


# async: FastAPI runs a plain `def` dependency in a worker thread, a thread hop on every request
# for a few microseconds of hashing
async def require_key(credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> None:
    _check(credentials, _settings["keys"] | _settings["admin_keys"])


async def require_admin(credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> None:
    _check(credentials, _settings["admin_keys"])


@api.exception_handler(_Unauthorized)
async def _unauthorized(request: Request, exc: _Unauthorized) -> JSONResponse:
    return JSONResponse({"detail": "missing or invalid API key"}, status_code=401,
                        headers={"WWW-Authenticate": "Bearer"})


@api.exception_handler(RequestValidationError)
async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in exc.errors()]
    return JSONResponse({"detail": errors}, status_code=422)


_metrics: dict[str, Any] = {}


def _observe(path: str, status: int, seconds: float) -> None:
    """Per-endpoint latency and status counts, exported with Ray's metrics (Prometheus format on
    each node's metrics export port) as quanyu_request_latency_ms and quanyu_requests_total."""
    if not _metrics:
        from ray.util import metrics

        _metrics["latency"] = metrics.Histogram(
            "quanyu_request_latency_ms", description="Latency of Quanyu API requests at the ingress.",
            boundaries=[1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000], tag_keys=("endpoint",))
        _metrics["requests"] = metrics.Counter(
            "quanyu_requests_total", description="Quanyu API requests by endpoint and status.",
            tag_keys=("endpoint", "status"))
    _metrics["latency"].observe(seconds * 1e3, tags={"endpoint": path})
    _metrics["requests"].inc(tags={"endpoint": path, "status": str(status)})


@api.middleware("http")
async def _measured(request: Request, call_next):
    started = time.perf_counter()
    response = await call_next(request)
    route = request.scope.get("route")
    try:
        _observe(getattr(route, "path", "unmatched"), response.status_code, time.perf_counter() - started)
    except Exception:  # metrics must never fail a request
        logger.debug("metrics unavailable", exc_info=True)
    return response


@api.middleware("http")
async def _limits(request: Request, call_next):
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
        return JSONResponse({"detail": f"request body over {MAX_BODY_BYTES:,} bytes"}, status_code=413)
    if request.method in ("POST", "PUT", "PATCH"):
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                return JSONResponse({"detail": f"request body over {MAX_BODY_BYTES:,} bytes"}, status_code=413)
        request._body = body  # the route reads it again
    try:
        return await call_next(request)
    except RecursionError:
        return JSONResponse({"detail": "JSON nested too deeply"}, status_code=400)


# a replica that died (killed, its node lost) or is unreachable for a moment: Serve's router drops
# it and a replacement starts, but the request in flight fails. Every family call is a read of a
# loaded model, so the ingress sends it again (to another replica when there is one).
_RETRYABLE = (ActorDiedError, ActorUnavailableError, RayActorError)
RETRIES = 3
ELSEWHERE_RETRIES = 8  # a 503 from a replica that lacks the champion is asked again (another replica, likely)


async def _ask(handle: DeploymentHandle, method: str, *args: Any) -> Any:
    for attempt in range(RETRIES + 1):
        try:
            answer = await getattr(handle, method).remote(*args)
        except _RETRYABLE:
            if attempt == RETRIES:
                raise
            logger.warning("a %s replica was lost during %s; retrying (%d/%d)", handle.deployment_name, method,
                           attempt + 1, RETRIES)
            await asyncio.sleep(0.05 * 2 ** attempt)
            continue
        # a replica that restarted without the champion (until its health check fails): ask another
        if isinstance(answer, tuple) and answer[0] == 503 and answer[1].pop(RETRY_ELSEWHERE, False):
            for _ in range(ELSEWHERE_RETRIES):
                again = await getattr(handle, method).remote(*args)
                if not (isinstance(again, tuple) and again[0] == 503 and again[1].pop(RETRY_ELSEWHERE, False)):
                    return again
        return answer


def _answer(result: tuple[int, dict]) -> JSONResponse:
    status, body = result
    return JSONResponse(body, status_code=status)


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=64)
@serve.ingress(api)
class Ingress:
    def __init__(self, families: dict[str, DeploymentHandle], key_digests: list[str], admin_digests: list[str],
                 alias: str = "champion") -> None:
        self.families = families  # family name → its deployment's handle
        self.alias = alias
        # through the module, not this function's globals: Serve ships this class by value, and
        # the key checks (module functions) read the module's settings
        import serving.app as module

        module._settings["keys"] = set(key_digests)
        module._settings["admin_keys"] = set(admin_digests)

    @api.get("/healthz", include_in_schema=True)
    async def healthz(self) -> dict:
        return {"status": "ok"}

    @api.get("/v1/models", response_model=schemas.ModelsResponse, dependencies=[Depends(require_key)],
             responses=PROTECTED)
    async def models(self) -> dict:
        return {"families": list(await asyncio.gather(*(self._status(f) for f in FAMILIES)))}

    async def _status(self, family: str) -> dict:
        """A family's status, or, when none of its replicas answers in time (every one failing
        its health check and being replaced, say), a status that says so."""
        try:
            return await asyncio.wait_for(_ask(self.families[family], "status"), STATUS_TIMEOUT_S)
        except Exception as exc:  # timed out, or every retry met a dying replica
            return {"family": family, "alias": self.alias, "version": None, "loaded_at": None, "metrics": {},
                    "last_check": None, "last_error": f"no replica of quanyu-{family} answered within "
                    f"{STATUS_TIMEOUT_S:.0f} s ({type(exc).__name__}); Serve is replacing replicas that cannot "
                    "load the champion: see the replica logs"}

    @api.post("/v1/demand/forecast", response_model=schemas.ForecastResponse, dependencies=[Depends(require_key)],
              responses={**WITH_BODY, 404: {"model": schemas.Problem}, **BEYOND, 422: {"model": schemas.Problem},
                         503: {"model": schemas.Problem}})
    async def forecast(self, request: schemas.ForecastRequest):
        return _answer(await _ask(self.families["demand"], "forecasts", request.model_dump(mode="json")))

    @api.post("/v1/matching/recommend", response_model=schemas.RecommendResponse, dependencies=[Depends(require_key)],
              responses={**WITH_BODY, 422: {"model": schemas.Problem}, 503: {"model": schemas.Problem}})
    async def recommend(self, request: schemas.RecommendRequest):
        return _answer(await _ask(self.families["matching"], "call", "recommend", request.model_dump(mode="json")))

    @api.post("/v1/matching/audience", response_model=schemas.AudienceResponse, dependencies=[Depends(require_key)],
              responses={**WITH_BODY, 404: {"model": schemas.Problem}, 422: {"model": schemas.Problem}, 503: {"model": schemas.Problem}})
    async def audience(self, request: schemas.AudienceRequest):
        return _answer(await _ask(self.families["matching"], "call", "audience", request.model_dump(mode="json")))

    @api.post("/v1/location/recommend", response_model=schemas.SitesResponse, dependencies=[Depends(require_key)],
              responses={**WITH_BODY, 404: {"model": schemas.Problem}, **BEYOND, 422: {"model": schemas.Problem},
                         503: {"model": schemas.Problem}})
    async def sites(self, request: schemas.SitesRequest):
        return _answer(await _ask(self.families["location"], "call", "recommend", request.model_dump(mode="json")))

    @api.get("/v1/location/cities", response_model=schemas.CitiesResponse, dependencies=[Depends(require_key)],
             responses={**PROTECTED, 503: {"model": schemas.Problem}})
    async def cities(self):
        return _answer(await _ask(self.families["location"], "call", "cities", {}))

    @api.get("/v1/location/map", response_model=schemas.CityMapResponse, dependencies=[Depends(require_key)],
             responses={**PROTECTED, 404: {"model": schemas.Problem}, 422: {"model": schemas.Problem}, 503: {"model": schemas.Problem}})
    async def city_map(self, city: str = Query(..., min_length=1, max_length=64, pattern=schemas.CITY_PATTERN)):
        return _answer(await _ask(self.families["location"], "call", "map", {"city": city}))

    @api.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    async def docs(self):
        return docs_page()

    @api.get("/planner", response_class=HTMLResponse, include_in_schema=False)
    async def planner_page(self):
        return HTMLResponse(planner.asset("index.html")[0], headers=planner.HEADERS)

    @api.get("/planner/{name}", include_in_schema=False)
    async def planner_asset(self, name: str):
        try:
            body, media_type = planner.asset(name)
        except KeyError:
            return JSONResponse({"detail": "no such planner file"}, status_code=404)
        return Response(body, media_type=media_type, headers=planner.HEADERS)

    @api.post("/v1/{family}/invocations", dependencies=[Depends(require_key)],
              responses={**WITH_BODY, 404: {"model": schemas.Problem}, **BEYOND, 422: {"model": schemas.Problem},
                         503: {"model": schemas.Problem}})
    async def invocations(self, family: str, payload: dict[str, Any]):
        if family not in FAMILIES:
            return JSONResponse({"detail": f"unknown family {family[:40]!r}; one of {', '.join(FAMILIES)}"},
                                status_code=404)
        return _answer(await _ask(self.families[family], "invocations", payload))

    @api.post("/v1/admin/reload", response_model=schemas.ModelsResponse, dependencies=[Depends(require_admin)],
              responses=PROTECTED)
    async def reload(self) -> dict:
        return {"families": [await _ask(self.families[f], "reload") for f in FAMILIES]}


def api_keys(environ: dict | None = None) -> tuple[list[str], list[str]]:
    """Digests of the API keys (QUANYU_API_KEYS) and admin keys (QUANYU_ADMIN_KEYS), comma-separated."""
    env = os.environ if environ is None else environ
    keys = [k.strip() for k in env.get("QUANYU_API_KEYS", "").split(",") if k.strip()]
    admin = [k.strip() for k in env.get("QUANYU_ADMIN_KEYS", "").split(",") if k.strip()]
    return [key_digest(k) for k in keys], [key_digest(k) for k in admin]


def build(args: dict) -> serve.Application:
    """The application. args: tracking_uri, alias (champion), poll_seconds (10); keys come from
    QUANYU_API_KEYS / QUANYU_ADMIN_KEYS in the environment of whoever builds it."""
    tracking_uri = args.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
    if not tracking_uri:
        raise ValueError("serving needs a tracking_uri (argument or MLFLOW_TRACKING_URI)")
    alias = args.get("alias", "champion")
    poll = float(args.get("poll_seconds", 10.0))
    # digests handed over by `quanyu serve` (which keeps the keys out of Ray's environment), else
    # the keys of whoever builds the app (`serve run configs/serve.yaml`, tests)
    keys, admin = (args["key_digests"], args.get("admin_digests", [])) if "key_digests" in args else api_keys()
    if not keys and not admin:
        raise ValueError("no API key: set QUANYU_API_KEYS (comma-separated); quanyu serve creates one for you")
    options = _deployment_options(args.get("deployments") or {})
    family = {f: Family.options(name=f"Family-{f}", **options.get(f"Family-{f}", {})).bind(f, tracking_uri, alias, poll)
              for f in FAMILIES}
    return Ingress.options(**options.get("Ingress", {})).bind(family, keys, admin, alias)


DEPLOYMENT_OPTIONS = ("num_replicas", "max_ongoing_requests", "autoscaling_config", "ray_actor_options",
                      "max_queued_requests", "graceful_shutdown_timeout_s")


def _deployment_options(given: dict) -> dict[str, dict]:
    """Per deployment name, the options of configs/serve.yaml that `.options()` takes. Unknown
    deployment names or options are refused: a typo must not be silently ignored."""
    known = {"Ingress", *(f"Family-{f}" for f in FAMILIES)}
    out = {}
    for name, options in given.items():
        if name not in known:
            raise ValueError(f"serve config: no deployment named {name!r}; the application has {', '.join(sorted(known))}")
        unknown = set(options) - set(DEPLOYMENT_OPTIONS)
        if unknown:
            raise ValueError(f"serve config: {name} has options quanyu serve does not apply: {', '.join(sorted(unknown))}")
        out[name] = dict(options)
        if "autoscaling_config" in out[name]:
            out[name].pop("num_replicas", None)
    return out
