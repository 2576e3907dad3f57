"""What every Quanyu HTTP app shares: API keys, body limits, error shapes, per-endpoint metrics and
the documented error responses. The root app and each family's app (serving/app.py) are FastAPI
apps made by `new_api`, so a request meets the same rules whichever replica answers it.

Replicas run in their own processes, and Serve ships their classes by value: state a replica sets
(its keys) lives in this module and is reached through module functions, never through a copy of
this module's globals captured with a class.
"""

# no `from __future__ import annotations`: FastAPI resolves route annotations where the app runs

import base64
import hashlib
import hmac
import logging
import os
import re
import time
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from serving import schemas

logger = logging.getLogger("quanyu.serving")
MAX_BODY_BYTES = 1_000_000

# every protected operation documents its 401 (a missing, malformed or wrong key); every one that
# takes a body, its 400 (not UTF-8 JSON, or nested too deeply) and 413 (over MAX_BODY_BYTES)
PROTECTED = {401: {"model": schemas.Problem, "description": "missing or invalid API key"}}
WITH_BODY = {**PROTECTED, 400: {"model": schemas.Problem, "description": "the body is not JSON in UTF-8, or is nested "
                                "too deeply"},
             413: {"model": schemas.Problem, "description": f"the body is over {MAX_BODY_BYTES:,} bytes"}}
# what the other statuses of a family's operations mean
STATUSES = {
    404: "a store, SKU, member, city or site the served version does not know",
    # a valid request past what the served version does: the schema cannot say, since it follows
    # the version (models/errors.py)
    409: "beyond what the served version can answer; the message says what it can (its forecast horizon, the sites "
         "that meet the constraints)",
    422: "the request breaks the schema, or asks what the model cannot answer; the message says which field and why",
    503: "this family has no loaded version yet (none promoted, or still loading); retry shortly",
}


def responses(*statuses: int, body: bool = True) -> dict[int, dict]:
    """The documented error responses of an operation: auth (and body limits when it takes one)
    and the given statuses."""
    documented = dict(WITH_BODY if body else PROTECTED)
    for status in statuses:
        documented[status] = {"model": schemas.Problem, "description": STATUSES[status]}
    return documented


# --- API keys --------------------------------------------------------------------------------------

def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def api_keys(environ: dict | None = None) -> tuple[list[str], list[str]]:
    """Digests of the API keys (QUANYU_API_KEYS) and admin keys (QUANYU_ADMIN_KEYS), comma-separated."""
    env = os.environ if environ is None else environ
    keys = [k.strip() for k in env.get("QUANYU_API_KEYS", "").split(",") if k.strip()]
    admin = [k.strip() for k in env.get("QUANYU_ADMIN_KEYS", "").split(",") if k.strip()]
    return [key_digest(k) for k in keys], [key_digest(k) for k in admin]


def key_digests(args: dict) -> tuple[list[str], list[str]]:
    """The digests an application builder was handed (`quanyu serve` keeps the keys out of Ray's
    environment), else those of the builder's own environment (`serve deploy`, tests)."""
    keys, admin = (args["key_digests"], args.get("admin_digests", [])) if "key_digests" in args else api_keys()
    if not keys and not admin:
        raise ValueError("no API key: set QUANYU_API_KEYS (comma-separated); quanyu serve creates one for you")
    return list(keys), list(admin)


_settings: dict[str, set[str]] = {"keys": set(), "admin_keys": set()}


def accept_keys(digests: list[str], admin_digests: list[str]) -> None:
    """What this process's apps accept: a replica calls it once, when it starts."""
    _settings["keys"] = set(digests)
    _settings["admin_keys"] = set(admin_digests)


class Unauthorized(Exception):
    pass


def _check(credentials: HTTPAuthorizationCredentials | None, digests: set[str]) -> None:
    supplied = key_digest(credentials.credentials) if credentials else ""
    # compare against every digest in constant time, whatever matches first
    ok = False
    for digest in digests:
        ok |= hmac.compare_digest(supplied, digest)
    if not ok:
        raise Unauthorized()


_bearer = HTTPBearer(auto_error=False)


# async: FastAPI runs a plain `def` dependency in a worker thread, a thread hop on every request
# for a few microseconds of hashing
async def require_key(credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> None:
    _check(credentials, _settings["keys"] | _settings["admin_keys"])


async def require_admin(credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> None:
    _check(credentials, _settings["admin_keys"])


# --- the app -------------------------------------------------------------------------------------

def answer(result: tuple[int, dict]) -> JSONResponse:
    status, body = result
    headers = {"Retry-After": "1"} if status == 503 else None
    return JSONResponse(body, status_code=status, headers=headers)


def new_api(title: str, description: str = "", *, documented: bool = False) -> FastAPI:
    """A FastAPI app with Quanyu's rules: 401 for a missing or wrong key, 422 with field, message
    and type only, 413 past MAX_BODY_BYTES, 400 for JSON nested too deeply, and each request
    counted in the per-endpoint metrics. `documented`: it serves /openapi.json (the root app);
    a family's app leaves its document to the root, which merges them."""
    api = FastAPI(title=title, version="1", description=description, docs_url=None, redoc_url=None,
                  openapi_url="/openapi.json" if documented else None)

    @api.exception_handler(Unauthorized)
    async def _unauthorized(request: Request, exc: Unauthorized) -> JSONResponse:
        return JSONResponse({"detail": "missing or invalid API key"}, status_code=401,
                            headers={"WWW-Authenticate": "Bearer"})

    @api.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    api.middleware("http")(_measured)
    api.middleware("http")(_limits)
    return api


async def _measured(request: Request, call_next):
    started = time.perf_counter()
    response = await call_next(request)
    route = request.scope.get("route")
    # the path as clients call it: a family's app sees its routes under its route prefix
    path = request.scope.get("root_path", "").rstrip("/") + route.path if route is not None else "unmatched"
    try:
        _observe(path, response.status_code, time.perf_counter() - started)
    except Exception:  # metrics must never fail a request
        logger.debug("metrics unavailable", exc_info=True)
    return response


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


_metrics: dict[str, Any] = {}


def _observe(path: str, status: int, seconds: float) -> None:
    """Per-endpoint latency and status counts, exported with Ray's metrics (Prometheus format on
    each node's metrics export port) as quanyu_request_latency_ms and quanyu_requests_total."""
    if not _metrics:
        from ray.util import metrics

        _metrics["latency"] = metrics.Histogram(
            "quanyu_request_latency_ms", description="Latency of Quanyu API requests in the replica that answers them.",
            boundaries=[1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000], tag_keys=("endpoint",))
        _metrics["requests"] = metrics.Counter(
            "quanyu_requests_total", description="Quanyu API requests by endpoint and status.",
            tag_keys=("endpoint", "status"))
    _metrics["latency"].observe(seconds * 1e3, tags={"endpoint": path})
    _metrics["requests"].inc(tags={"endpoint": path, "status": str(status)})


SWAGGER_CDN = "https://cdn.jsdelivr.net"  # where FastAPI's Swagger UI page loads its script and style


def docs_page(openapi_url: str = "/openapi.json") -> HTMLResponse:
    """FastAPI's Swagger UI page with a Content-Security-Policy: its script and style from the one
    CDN FastAPI names, its inline script by hash, requests only to this server, no framing."""
    page = get_swagger_ui_html(openapi_url=openapi_url, title="Quanyu API")
    html = page.body.decode()
    inline = [hashlib.sha256(script.encode()).digest() for script in re.findall(r"<script>(.*?)</script>", html, re.S)]
    hashes = " ".join(f"'sha256-{base64.b64encode(h).decode()}'" for h in inline)
    csp = (f"default-src 'none'; script-src {SWAGGER_CDN} {hashes}; style-src {SWAGGER_CDN}; "
           "img-src 'self' data: https://fastapi.tiangolo.com; connect-src 'self'; frame-ancestors 'none'")
    return HTMLResponse(html, headers={"Content-Security-Policy": csp, "X-Content-Type-Options": "nosniff"})
