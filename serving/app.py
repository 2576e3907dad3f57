"""The Ray Serve applications: one per model family, each answering HTTP itself, and a root app.

    client ──HTTP──▶ HAProxy ──▶ Family-<family> replica: keys, limits, validation, the model   /v1/<family>/…
                            └──▶ Root replica: /healthz, /v1/models, /v1/admin/reload, /docs, /planner

One hop from the port to the replica that holds the model (issue 23): each family is its own Serve
application with route prefix /v1/<family>, a FastAPI app made from its route table
(serving/routes.py) with the rules every app shares (serving/http.py). With `quanyu serve`'s
default ingress, HAProxy forwards to the replicas' own HTTP servers (Serve's direct ingress); with
`--ingress proxy`, Serve's proxy does, through a handle call.

Each Family replica follows `models:/quanyu-<family>@<alias>` (serving/families.py): it polls the
registry, loads a moved alias beside the served version, smoke-tests it and swaps it in, so no
request fails during a swap; a version that fails to load never replaces the one serving. A
replica without a version answers 503 with Retry-After, which HAProxy retries on another replica,
and fails Serve's health check once it is HEALTH_GRACE_S old, so Serve replaces it.

`applications(args)` gives every application with its name and route prefix, for `quanyu serve`
and the tests; `build(args)` (the root) and `build_family(args)` are the builders that
configs/serve.yaml names, one application entry each.
"""

# no `from __future__ import annotations`: FastAPI resolves the route annotations in the replica,
# where Serve ships the ingress class by value and string annotations cannot be resolved

import asyncio
import logging
import os
import time

from fastapi import Depends
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import ValidationError
from ray import serve
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

from models.families import plugin_env
from serving import families, handlers, http, planner, routes, schemas
from serving.families import FamilyModel, Poller
from models.api import Operation, invalid
from serving.routes import INVOCATIONS

logger = logging.getLogger("quanyu.serving")

BATCH = 16  # requests of one batched operation (or /invocations) a replica answers together at most
HEALTH_GRACE_S = 30.0  # a replica without its champion passes health checks this long after its start
STATUS_TIMEOUT_S = 5.0  # /v1/models waits this long for a family's replicas


class FamilyServer:
    """One model family's served version, following its alias, and the family's HTTP routes
    (serving/routes.py binds them to this object in each replica)."""

    def __init__(self, family: str, tracking_uri: str, alias: str, poll_seconds: float,
                 key_digests: list[str], admin_digests: list[str]) -> None:
        http.accept_keys(key_digests, admin_digests)
        routes.serve_from(self)
        self.family = family
        self.started = time.monotonic()
        self.model = FamilyModel(family, tracking_uri, alias)
        self.model.check()
        if self.model.current is None and self.model.store_down:
            # a replica that cannot read the registry would only answer 503: fail its start instead,
            # so that Serve retries it while the replicas that have a model keep serving
            raise RuntimeError(f"quanyu-{family}: {self.model.last_error}; Serve starts this replica again")
        self.poller = Poller(self.model, poll_seconds).start()

    async def answer(self, route: Operation, request: dict) -> tuple[int, dict]:
        if route == INVOCATIONS:  # equal, not the same object: Serve ships the routes to the replica by value
            return await self.invocations(request)
        if route.batched:
            return await self.batched((route, request))
        return self.call(route, request)

    def _unavailable(self) -> tuple[int, dict]:
        return 503, {"detail": f"quanyu-{self.family} has no loaded version yet "
                               f"({self.model.last_error or 'still loading'}); retry shortly"}

    def check_health(self) -> None:
        """Serve's health check: a replica without the family's champion (its load failed) is
        unhealthy once it is HEALTH_GRACE_S old, so Serve replaces it and stops routing to it
        (meanwhile HAProxy sends its 503s to other replicas). The grace lets an application whose
        champion no replica can load still deploy: the other families serve, and /v1/models says
        what is wrong with this one."""
        if not self.model.ready and time.monotonic() - self.started > HEALTH_GRACE_S:
            raise RuntimeError(f"quanyu-{self.family} holds no version of its champion v{self.model.champion}: "
                               f"{self.model.last_error}")

    def call(self, route: Operation, request: dict) -> tuple[int, dict]:
        loaded = self.model.current  # one read: a swap during this request does not affect it
        if loaded is None:
            return self._unavailable()
        try:
            return route.handler(loaded, request)
        except ValidationError as exc:
            return invalid(exc)
        except Exception:  # a bug, not the caller's fault: log it, say nothing internal
            logger.exception("quanyu-%s %s failed", self.family, route.name)
            return 500, {"detail": handlers.internal_error(self.family)}

    @serve.batch(max_batch_size=BATCH, batch_wait_timeout_s=0.0)
    async def batched(self, asks: list[tuple[Operation, dict]]) -> list[tuple[int, dict]]:
        """Requests of a batched operation (one with `many`, e.g. demand's forecasts) answered
        together: whatever queued while the previous batch was computed (no waiting: at
        concurrency 1 a batch is one request) gets, per operation, one call of `many` (for
        demand: one feature build, one booster call)."""
        loaded = self.model.current
        if loaded is None:
            return [self._unavailable() for _ in asks]
        answers: list[tuple[int, dict] | None] = [None] * len(asks)
        for name in dict.fromkeys(route.name for route, _ in asks):
            mine = [i for i, (route, _) in enumerate(asks) if route.name == name]
            route = asks[mine[0]][0]
            try:
                for i, answer in zip(mine, route.many(loaded, [asks[i][1] for i in mine])):
                    answers[i] = answer
            except Exception:  # a bug, not the callers' fault: log it, say nothing internal
                logger.exception("quanyu-%s %s batch of %d failed", self.family, name, len(mine))
                for i in mine:
                    answers[i] = (500, {"detail": handlers.internal_error(self.family)})
        return answers

    @serve.batch(max_batch_size=BATCH, batch_wait_timeout_s=0.0)
    async def invocations(self, payloads: list[dict]) -> list[tuple[int, dict]]:
        """MLflow-protocol requests answered together: for a family whose model answers row per
        row (its api's `invocations.row_per_row`), the rows of whatever queued are scored in one predict call."""
        loaded = self.model.current
        if loaded is None:
            return [self._unavailable() for _ in payloads]
        try:
            return handlers.invocations_many(loaded, self.family, payloads)
        except Exception:  # a bug, not the callers' fault: log it, say nothing internal
            logger.exception("quanyu-%s invocations batch of %d failed", self.family, len(payloads))
            return [(500, {"detail": handlers.internal_error(self.family)}) for _ in payloads]

    def status(self) -> dict:
        return self.model.status()

    def reload(self) -> dict:
        self.model.check()
        return self.model.status()


def family_deployment(family: str) -> serve.Deployment:
    """The Serve deployment of one family: FamilyServer behind the family's FastAPI app."""
    ingress = serve.ingress(routes.family_api(family))(FamilyServer)
    return serve.deployment(name=f"Family-{family}", ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=32,
                            health_check_period_s=2)(ingress)


root_api = http.new_api("Quanyu", documented=True, description=(
    "Forecasts, recommendations, audiences and site recommendations from the champion of each model "
    "family. Every /v1 endpoint needs `Authorization: Bearer <key>`."))
_documents: dict[tuple[str, ...], dict] = {}


def openapi_document() -> dict:
    """The root's operations and every family's (routes.merged_openapi), built once per process
    and family list."""
    served = tuple(families.FAMILIES)
    if served not in _documents:
        _documents[served] = routes.merged_openapi(root_api, served)
    return _documents[served]


root_api.openapi = openapi_document

# a family replica that died (killed, its node lost) or is unreachable for a moment: a status or
# reload call is sent again, to another replica when there is one
_RETRYABLE = (ActorDiedError, ActorUnavailableError, RayActorError)
RETRIES = 3


@serve.deployment(name="Root", ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=64)
@serve.ingress(root_api)
class Root:
    """What is not one family's: health, the families' status and reload, the docs, the planner."""

    def __init__(self, apps: dict[str, str], alias: str, key_digests: list[str], admin_digests: list[str]) -> None:
        http.accept_keys(key_digests, admin_digests)
        self.apps = apps  # family → the name of its Serve application
        self.alias = alias

    async def _ask(self, family: str, method: str) -> dict:
        for attempt in range(RETRIES + 1):
            try:
                return await getattr(serve.get_app_handle(self.apps[family]), method).remote()
            except _RETRYABLE:
                if attempt == RETRIES:
                    raise
                await asyncio.sleep(0.05 * 2 ** attempt)

    @root_api.get("/healthz")
    async def healthz(self) -> dict:
        return {"status": "ok"}

    @root_api.get("/v1/models", response_model=schemas.ModelsResponse, dependencies=[Depends(http.require_key)],
                  responses=http.PROTECTED)
    async def models(self) -> dict:
        return {"families": list(await asyncio.gather(*(self._status(f) for f in self.apps)))}

    async def _status(self, family: str) -> dict:
        """A family's status, or, when none of its replicas answers in time (every one failing
        its health check and being replaced, say, or its application not deployed), one that
        says so."""
        try:
            return await asyncio.wait_for(self._ask(family, "status"), STATUS_TIMEOUT_S)
        except Exception as exc:  # timed out, no such application, or every retry met a dying replica
            return {"family": family, "alias": self.alias, "version": None, "loaded_at": None, "metrics": {},
                    "last_check": None, "last_error": f"no replica of quanyu-{family} answered within "
                    f"{STATUS_TIMEOUT_S:.0f} s ({type(exc).__name__}); Serve is replacing replicas that cannot "
                    "load the champion: see the replica logs"}

    @root_api.post("/v1/admin/reload", response_model=schemas.ModelsResponse,
                   dependencies=[Depends(http.require_admin)], responses=http.PROTECTED)
    async def reload(self) -> dict:
        return {"families": [await self._ask(f, "reload") for f in self.apps]}

    @root_api.post("/v1/{family}/invocations", dependencies=[Depends(http.require_key)], include_in_schema=False)
    async def unknown_invocations(self, family: str):
        # a known family's /invocations is answered by its own application (a longer route prefix)
        return JSONResponse({"detail": f"unknown family {family[:40]!r}; one of {', '.join(self.apps)}"},
                            status_code=404)

    @root_api.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    async def docs(self):
        return http.docs_page()

    @root_api.get("/planner", response_class=HTMLResponse, include_in_schema=False)
    async def planner_page(self):
        return HTMLResponse(planner.asset("index.html")[0], headers=planner.HEADERS)

    @root_api.get("/planner/{name}", include_in_schema=False)
    async def planner_asset(self, name: str):
        try:
            body, media_type = planner.asset(name)
        except KeyError:
            return JSONResponse({"detail": "no such planner file"}, status_code=404)
        return Response(body, media_type=media_type, headers=planner.HEADERS)


def _tracking_uri(args: dict) -> str:
    tracking_uri = args.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
    if not tracking_uri:
        raise ValueError("serving needs a tracking_uri (argument or MLFLOW_TRACKING_URI)")
    return tracking_uri


def app_names(name: str = "quanyu") -> dict[str, str]:
    """family → the Serve application that serves it, beside the root application `name`."""
    return {f: f"{name}-{f}" for f in families.FAMILIES}


def build_family(args: dict) -> serve.Application:
    """One family's application. args: family, tracking_uri, alias (champion), poll_seconds (10),
    deployments (options by deployment name); keys as for `build`."""
    family = args.get("family")
    if family not in families.FAMILIES:
        raise ValueError(f"serve config: family {family!r} is not one of {', '.join(families.FAMILIES)}")
    keys, admin = http.key_digests(args)
    options = deployment_options(args.get("deployments") or {}).get(f"Family-{family}", {})
    return family_deployment(family).options(**options).bind(
        family, _tracking_uri(args), args.get("alias", "champion"), float(args.get("poll_seconds", 10.0)), keys, admin)


def build(args: dict) -> serve.Application:
    """The root application. args: alias (champion), name (the root application's name, quanyu:
    the families' applications are <name>-<family>), deployments; keys from `key_digests` /
    `admin_digests` (what `quanyu serve` hands over, keeping the keys out of Ray's environment),
    else QUANYU_API_KEYS / QUANYU_ADMIN_KEYS in the environment of whoever builds it."""
    keys, admin = http.key_digests(args)
    options = deployment_options(args.get("deployments") or {}).get("Root", {})
    return Root.options(**options).bind(app_names(args.get("name", "quanyu")), args.get("alias", "champion"), keys, admin)


def applications(args: dict, name: str = "quanyu", prefix: str = "/") -> list[tuple[str, str, serve.Application]]:
    """Every application of the API as (name, route prefix, application): the families' first, so
    that the root's /v1/models finds them, then the root. `prefix` puts the whole API under a path."""
    keys, admin = http.key_digests(args)
    args = {**args, "key_digests": keys, "admin_digests": admin, "tracking_uri": _tracking_uri(args)}
    base = prefix.rstrip("/")
    apps = [(app, f"{base}/v1/{family}", build_family({**args, "family": family}))
            for family, app in app_names(name).items()]
    return apps + [(name, prefix, build({**args, "name": name}))]


def run(args: dict, name: str = "quanyu", prefix: str = "/") -> None:
    """Deploy every application together (serve.start first) and return once each is running,
    which for a family means its replicas started, with or without a model. Serve's `run_many`
    (a developer API in the pinned Ray 2.60) deploys them at the same time; four `serve.run`
    calls waited for each in turn."""
    serve.run_many([serve.RunTarget(application, name=app, route_prefix=route_prefix)
                    for app, route_prefix, application in applications(args, name, prefix)])


def delete(name: str = "quanyu", timeout: float = 120.0) -> None:
    """Delete every application of the API, together: their replicas drain at the same time."""
    apps = (name, *app_names(name).values())
    for app in apps:
        serve.delete(app, _blocking=False)
    deadline = time.monotonic() + timeout
    while set(apps) & set(serve.status().applications) and time.monotonic() < deadline:
        time.sleep(0.2)


DEPLOYMENT_OPTIONS = ("num_replicas", "max_ongoing_requests", "autoscaling_config", "ray_actor_options",
                      "max_queued_requests", "graceful_shutdown_timeout_s")


def deployment_options(given: dict) -> dict[str, dict]:
    """Per deployment name, the options of configs/serve.yaml that `.options()` takes, every
    deployment's actor options with the plugin families (QUANYU_FAMILIES) of the process that
    deploys, so that its replicas know them on a cluster started without them. Unknown
    deployment names or options are refused: a typo must not be silently ignored."""
    known = {"Root", *(f"Family-{f}" for f in families.FAMILIES)}
    out = {}
    for name, options in given.items():
        if name not in known:
            raise ValueError(f"serve config: no deployment named {name!r}; the applications have "
                             f"{', '.join(sorted(known))}")
        unknown = set(options) - set(DEPLOYMENT_OPTIONS)
        if unknown:
            raise ValueError(f"serve config: {name} has options quanyu serve does not apply: {', '.join(sorted(unknown))}")
        out[name] = dict(options)
        if "autoscaling_config" in out[name]:
            out[name].pop("num_replicas", None)
    env = plugin_env()
    if env:
        for name in known:
            given_actor = out.setdefault(name, {}).get("ray_actor_options", {})
            runtime_env = given_actor.get("runtime_env", {})
            out[name]["ray_actor_options"] = {"num_cpus": 0.25, **given_actor, "runtime_env": {
                **runtime_env, "env_vars": {**runtime_env.get("env_vars", {}), **env}}}
    return out
