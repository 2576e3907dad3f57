"""`quanyu serve`: run the Serve applications in the foreground, or detached in the background,
and stop it.

Foreground: a local Ray (or the cluster at RAY_ADDRESS), an ingress on host:port, and the
applications of `serving.app.applications` (one per family at /v1/<family>, the root at /);
Ctrl-C or SIGTERM shuts it down. `--detach` starts that same foreground server as a background
process (its log in QUANYU_HOME/serve.log, its pid and URL in QUANYU_HOME/serve.json) and returns
once every family answers; `quanyu serve stop` signals it.

Ingress (`--ingress`): `haproxy` puts HAProxy (Debian's `haproxy` binary) on host:port, forwarding
each request straight to the HTTP server of a replica of the application whose prefix it matches
(Serve's direct ingress): one hop from the port to the model. It retries a request whose replica
died before answering, or answered 503 for want of a model, on another replica (RETRY_ON). `proxy`
is Serve's HTTP proxy actor, which reaches the replica through a handle call (a second hop, and no
retries). `auto`, the default, is HAProxy when the binary is there (the Makefile's set-up installs
it), else the proxy with a note saying how to get the fast path. HAProxy's files live in a short
temporary folder (it limits socket paths to 97 characters) that QUANYU_HOME/haproxy links to while
it runs.

Keys: QUANYU_API_KEYS (and QUANYU_ADMIN_KEYS) when set; otherwise one key of each is created in
QUANYU_HOME/api_key and QUANYU_HOME/admin_key (mode 0600) and reused on the next start. They are
taken out of the environment before Ray starts (a detached server gets operator-given keys through
a 0600 file it deletes), so no Ray process holds them; the applications get their digests.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from jobs.processes import alive, port_for_later
from jobs.runtime import Runtime, ensure_ray, ray_temp_dir
from serving.http_limits import CALLBACK

READY_TIMEOUT_S = 300  # QUANYU_SERVE_READY_TIMEOUT_S overrides it


def ready_timeout() -> float:
    """How long `quanyu serve` waits for every family with the alias to serve it."""
    return float(os.environ.get("QUANYU_SERVE_READY_TIMEOUT_S", READY_TIMEOUT_S))


FAILING_GIVE_UP_S = 60  # QUANYU_SERVE_FAILING_GIVE_UP_S overrides it


def failing_give_up() -> float:
    """How long a family may report a load error, without serving any version, before `serve
    --detach` stops waiting for it: a model that fails to load for a minute on end (its files are
    gone, its code cannot run) will not load by waiting out the whole ready timeout."""
    return float(os.environ.get("QUANYU_SERVE_FAILING_GIVE_UP_S", FAILING_GIVE_UP_S))


def private_home(home: Path) -> None:
    """QUANYU_HOME readable by its owner alone: it holds keys, the tracking store and logs."""
    home.mkdir(parents=True, exist_ok=True)
    os.chmod(home, 0o700)


def _key_file(path: Path) -> str:
    if path.exists():
        return path.read_text().strip()
    private_home(path.parent)
    key = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key


KEY_VARIABLES = ("QUANYU_API_KEYS", "QUANYU_ADMIN_KEYS")
KEYS_FILE_VARIABLE = "QUANYU_KEYS_FILE"  # how `--detach` hands operator-given keys to its server


@dataclass
class Keys:
    """The API and admin keys the server accepts, and the ones it created or read from
    QUANYU_HOME (to show the operator once; None where the operator gave keys)."""

    api: list[str]
    admin: list[str]
    created_api: str | None = None
    created_admin: str | None = None

    def digests(self) -> dict[str, list[str]]:
        from serving.http import key_digest

        return {"key_digests": [key_digest(k) for k in self.api], "admin_digests": [key_digest(k) for k in self.admin]}


def take_keys(home: Path) -> Keys:
    """The keys, taken out of this process's environment: from QUANYU_API_KEYS /
    QUANYU_ADMIN_KEYS, or from the file a detaching parent wrote (then deleted), else from (or
    into) QUANYU_HOME/api_key and admin_key. Removing the variables before Ray starts keeps the
    keys out of every Ray process's environment; the application gets their digests only."""
    given = {name: os.environ.pop(name, "") for name in KEY_VARIABLES}
    handed = os.environ.pop(KEYS_FILE_VARIABLE, None)
    if handed:
        path = Path(handed)
        given.update({k: v for k, v in json.loads(path.read_text()).items() if v})
        path.unlink(missing_ok=True)
    split = lambda text: [k.strip() for k in text.split(",") if k.strip()]  # noqa: E731
    api, admin = split(given["QUANYU_API_KEYS"]), split(given["QUANYU_ADMIN_KEYS"])
    keys = Keys(api, admin)
    if not api:
        keys.created_api = _key_file(home / "api_key")
        keys.api = [keys.created_api]
    if not admin:
        keys.created_admin = _key_file(home / "admin_key")
        keys.admin = [keys.created_admin]
    return keys


def with_alias(tracking_uri: str, alias: str) -> set[str]:
    """The families whose registered model has `alias` now: the ones serving must load before it
    counts as up (a family with no champion yet answers 503 until one is promoted)."""
    from models.registry import Registry
    from serving.families import FAMILIES

    registry, found = Registry(tracking_uri), set()
    for family in FAMILIES:
        try:
            if registry.version(family, alias) is not None:
                found.add(family)
        except Exception:  # the store is down: then serving says so
            pass
    return found


def families_ready(url: str, key: str, expected: set[str] | None = None) -> tuple[bool, list[dict]]:
    """(every expected family serves a version, /v1/models' families); expected None: all."""
    try:
        got = requests.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=5)
    except requests.RequestException:
        return False, []
    if got.status_code != 200:
        return False, []
    families = got.json()["families"]
    return all(f["version"] for f in families if expected is None or f["family"] in expected), families


def wait_ready(url: str, key: str, timeout: float | None = None, say=print,
               expected: set[str] | None = None, stop_requested=lambda: False) -> list[dict] | None:
    """Wait until every expected family serves a version (up to `timeout`, default
    ready_timeout()); None as soon as `stop_requested()` (a SIGTERM while starting). Raises
    TimeoutError naming the families that do not serve."""
    timeout = ready_timeout() if timeout is None else timeout
    deadline = time.monotonic() + timeout
    families: list[dict] = []
    while time.monotonic() < deadline:
        if stop_requested():
            return None
        ok, families = families_ready(url, key, expected)
        if ok:
            return families
        time.sleep(1.0)
    missing = [f"{f['family']} ({f['last_error'] or 'loading'})" for f in families if not f["version"]]
    raise TimeoutError(f"not every family answered within {timeout:.0f} s: {', '.join(missing) or 'no answer at all'}")


def serve_config(path: Path | None = None) -> dict:
    """What configs/serve.yaml's applications (what `serve deploy` would apply) set, so that
    `quanyu serve` runs the same: `deployments` (options by deployment name, over every
    application) and `env_vars` (their runtime environments' variables)."""
    import yaml

    path = path or Path(__file__).resolve().parents[1] / "configs" / "serve.yaml"
    if not path.exists():
        return {"deployments": {}, "env_vars": {}}
    apps = [a for a in yaml.safe_load(path.read_text()).get("applications", [])
            if str(a.get("import_path", "")).startswith("serving.app:")]
    return {"deployments": {d["name"]: {k: v for k, v in d.items() if k != "name"}
                            for a in apps for d in a.get("deployments", [])},
            "env_vars": {k: str(v) for a in apps for k, v in a.get("runtime_env", {}).get("env_vars", {}).items()}}


INGRESSES = ("auto", "haproxy", "proxy")
# what HAProxy sends to another replica: a connection refused (the replica is gone), a connection
# closed without an answer (it died while answering) and a 503 (it holds no model yet). Every Quanyu
# route reads a loaded model, so a request answered twice changes nothing. Serve's default is
# conn-failure alone, which lets a killed replica fail the requests it was answering.
RETRY_ON = "conn-failure empty-response 503"
RETRIES = 3
# a Ray of its own on this machine: no load balancer in front has to notice a replica or proxy going
# away, so stopping (or deleting an application) need not wait out Serve's 30 s draining minimum
LOCAL_DRAINING = {"RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2", "RAY_SERVE_PROXY_MIN_DRAINING_PERIOD_S": "2"}
HAPROXY_WRAPPER = Path(__file__).resolve().parents[1] / "serving" / "bin" / "haproxy"


def resolve_ingress(ingress: str, runtime: Runtime) -> tuple[str, str | None]:
    """The ingress `auto` stands for here, and a note when it is not the fast one."""
    if ingress != "auto":
        return ingress, None
    if runtime.ray_address:
        on = os.environ.get("RAY_SERVE_ENABLE_HA_PROXY") == "1"
        return ("haproxy", None) if on else ("proxy", (
            "serving through Serve's proxy (two hops): set RAY_SERVE_ENABLE_HA_PROXY=1 on the cluster's nodes for "
            "HAProxy's one hop (docs/serving.md)"))
    if os.environ.get("QUANYU_HAPROXY_BINARY") or shutil.which("haproxy"):
        return "haproxy", None
    return "proxy", ("no haproxy binary: serving through Serve's proxy, a few ms slower per request; install "
                     "Debian's haproxy (apt-get install haproxy, as `make test` does) for the one-hop ingress")


def _haproxy_binary(runtime: Runtime) -> str:
    if runtime.ray_address:
        raise RuntimeError("--ingress haproxy configures the Ray that quanyu serve starts; on a cluster set "
                           "RAY_SERVE_ENABLE_HA_PROXY=1 in the nodes' environment instead (docs/serving.md)")
    binary = os.environ.get("QUANYU_HAPROXY_BINARY") or shutil.which("haproxy")
    if not binary:
        raise RuntimeError("--ingress haproxy needs the haproxy binary: install Debian's package "
                           "(apt-get install haproxy) or set QUANYU_HAPROXY_BINARY to its path")
    return binary


def haproxy_env(home: Path, binary: str) -> dict[str, str]:
    """The environment that makes Serve run HAProxy (`binary`) as the ingress, retrying as
    RETRY_ON says, with its config, sockets and state under `home`/haproxy (Serve's default,
    /tmp/haproxy-serve, would be shared by every server on the machine) and its metrics on a free
    port. Ray's processes must start with it: Serve's controller reads it."""
    # HAProxy refuses socket paths over 97 characters and Serve adds a 56-character folder, so the
    # files go to a short temporary folder; QUANYU_HOME/haproxy links to it while the server runs
    folder = Path(tempfile.mkdtemp(prefix="qyhap-"))
    link = home / "haproxy"
    home.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        remove_haproxy_files(home)
    link.symlink_to(folder, target_is_directory=True)
    metrics_port = port_for_later()
    stats_port = next(p for p in iter(port_for_later, None) if p != metrics_port)
    # Serve runs HAProxy through serving/bin/haproxy, which adds the one line its config template
    # lacks for retries of requests with a body (`option http-buffer-request`)
    return {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_HAPROXY_BINARY_PATH": str(HAPROXY_WRAPPER),
            "QUANYU_HAPROXY_BINARY": binary,
            "RAY_SERVE_HAPROXY_RETRY_ON": RETRY_ON, "RAY_SERVE_HAPROXY_RETRIES": str(RETRIES),
            "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(folder / "haproxy.cfg"),
            "RAY_SERVE_HAPROXY_SOCKET_PATH": str(folder / "admin.sock"),
            "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(folder),
            "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(folder / "server-state"),
            "RAY_SERVE_HAPROXY_METRICS_PORT": str(metrics_port), "RAY_SERVE_HAPROXY_STATS_PORT": str(stats_port)}


def remove_haproxy_files(home: Path) -> None:
    """The HAProxy folder QUANYU_HOME/haproxy links to, the link, and any HAProxy process still
    running from that folder: Serve stops the HAProxy it started, but one spawned by a reload
    (`-sf`) while the server was being killed can outlive it, holding the port."""
    link = home / "haproxy"
    if link.is_symlink():
        folder = link.resolve()
        for pid in _processes_mentioning(str(folder), "haproxy"):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        shutil.rmtree(folder, ignore_errors=True)
        link.unlink()
    elif link.exists():
        shutil.rmtree(link, ignore_errors=True)


def _processes_mentioning(*words: str) -> list[int]:
    """Pids whose command line contains every word (Linux /proc; none elsewhere)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if all(w in command for w in words) and int(entry.name) != os.getpid():
            found.append(int(entry.name))
    return found


def foreground(runtime: Runtime, host: str, port: int, alias: str, poll_seconds: float, say=print,
               ingress: str = "auto") -> None:
    from ray import serve

    from serving import app as applications

    ingress, note = resolve_ingress(ingress, runtime)
    if note:
        say(note)
    keys = take_keys(runtime.home)  # before Ray starts: its processes never see them
    user = keys.created_api
    config = serve_config()
    # the applications' environment (RAY_SERVE_THROUGHPUT_OPTIMIZED, …) before Ray starts: its
    # processes inherit it. A variable already set in the operator's environment wins.
    for name, value in config["env_vars"].items():
        os.environ.setdefault(name, value)
    if ingress == "haproxy":
        os.environ.update(haproxy_env(runtime.home, _haproxy_binary(runtime)))
    # Serve's proxy refuses request heads over 16 KB with 431 (serving/http_limits.py); HAProxy
    # refuses heads larger than its buffer itself
    os.environ.setdefault("RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH", CALLBACK)
    if not runtime.ray_address:
        for name, value in LOCAL_DRAINING.items():
            os.environ.setdefault(name, value)
    ensure_ray(runtime)
    serve.start(http_options={"host": host, "port": port})
    applications.run({"tracking_uri": runtime.tracking_uri, "alias": alias, "poll_seconds": poll_seconds,
                      "deployments": config["deployments"], **keys.digests()})
    url = f"http://{host}:{port}"
    key = keys.api[0]
    stopping = {"now": False}

    def stop(*_):
        stopping["now"] = True

    signal.signal(signal.SIGTERM, stop)
    try:
        families = wait_ready(url, key, say=say, expected=with_alias(runtime.tracking_uri, alias),
                              stop_requested=lambda: stopping["now"])
        if families is None:  # stopped while starting: `serve --detach` gave up, or an operator
            return
        say(f"serving at {url} (OpenAPI at {url}/docs, the planner's page at {url}/planner)")
        for f in families:
            say(f"  {f['family']:<9} quanyu-{f['family']} " + (f"v{f['version']} ({alias})" if f["version"] else
                  f"no {alias} yet: its endpoints answer 503 until one is promoted"))
        if user and not os.environ.get("QUANYU_SERVE_DETACHED"):  # a terminal, not serve.log: keys stay out of logs
            say(f"API key (kept in {runtime.home / 'api_key'}): {user}")
        while not stopping["now"]:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        say("stopping …")
        try:
            serve.shutdown()
        finally:
            if ingress == "haproxy":
                remove_haproxy_files(runtime.home)


def detach(runtime: Runtime, host: str, port: int, alias: str, poll_seconds: float, say=print,
           ingress: str = "auto") -> dict:
    """Start the foreground server as a background process and wait until every family answers."""
    ingress, note = resolve_ingress(ingress, runtime)
    if note:
        say(note)
    if ingress == "haproxy":
        _haproxy_binary(runtime)  # refuse now, with the reason, rather than in the background
    state = runtime.home / "serve.json"
    if state.exists():
        info = json.loads(state.read_text())
        if alive(info.get("pid")):
            raise RuntimeError(f"Quanyu is already serving at {info['url']} (pid {info['pid']}); "
                               f"quanyu serve stop first")
    keys = take_keys(runtime.home)
    user = keys.created_api
    private_home(runtime.home)
    log_path = runtime.home / "serve.log"
    log = open(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")
    os.chmod(log_path, 0o600)
    command = [sys.executable, "-m", "jobs.cli", "serve", "--host", host, "--port", str(port), "--alias", alias,
               "--poll-seconds", str(poll_seconds), "--ingress", ingress]
    env = {k: v for k, v in os.environ.items() if k not in (*KEY_VARIABLES, KEYS_FILE_VARIABLE)}
    if not user or not keys.created_admin:  # keys the operator gave: a private file, not the child's environment
        handed = runtime.home / f".keys-{secrets.token_hex(8)}.json"
        fd = os.open(handed, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"QUANYU_API_KEYS": "" if keys.created_api else ",".join(keys.api),
                       "QUANYU_ADMIN_KEYS": "" if keys.created_admin else ",".join(keys.admin)}, f)
        env[KEYS_FILE_VARIABLE] = str(handed)
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                               env={**env, "QUANYU_HOME": str(runtime.home), "QUANYU_SERVE_DETACHED": "1"})
    url = f"http://{host}:{port}"
    info = {"pid": process.pid, "url": url, "log": str(runtime.home / "serve.log")}
    state.write_text(json.dumps(info))
    key = keys.api[0]
    expected = with_alias(runtime.tracking_uri, alias)
    families: list[dict] = []
    failing_since: dict[str, float] = {}  # family → when it began reporting a load error without a version
    waited = f"within {ready_timeout():.0f} s"
    deadline = time.monotonic() + ready_timeout()
    while time.monotonic() < deadline:
        if process.poll() is not None:
            state.unlink(missing_ok=True)
            raise RuntimeError(f"the server stopped while starting (exit {process.returncode}); see {info['log']}")
        ok, families = families_ready(url, key, expected)
        if ok:
            return {**info, "families": families, "key": user}
        now = time.monotonic()
        for f in families:  # a replica restarting in between ("still loading") does not reset the clock
            if expected is not None and f["family"] not in expected:
                continue  # no version has the alias: nothing to wait for
            if f["version"]:
                failing_since.pop(f["family"], None)
            elif f["last_error"]:
                failing_since.setdefault(f["family"], now)
        if failing_since and now - min(failing_since.values()) >= failing_give_up():
            waited = f"after failing to load for {failing_give_up():.0f} s"
            break
        time.sleep(1.0)
    # give up: say why where the operator looks, and stop what was started (it holds the port)
    missing = [f"{f['family']} ({f['last_error'] or 'still loading'})" for f in families
               if not f["version"] and (expected is None or f["family"] in expected)]
    reason = (f"not every family with a {alias} served it {waited}: "
              + (", ".join(missing) if missing else f"{url}/v1/models never answered"))
    logs = f"{ray_temp_dir(runtime.home) or '/tmp/ray'}/session_latest/logs/serve/"
    log.write(f"quanyu serve --detach gave up: {reason}; stopping the server. Tracebacks of the model "
              f"replicas are in {logs}\n".encode())
    log.flush()
    stop(runtime)
    raise TimeoutError(f"{reason}. The server was stopped; {info['log']} and the replica logs in {logs} have "
                       "the details")


def stop(runtime: Runtime, timeout: float = 60.0) -> str:
    state = runtime.home / "serve.json"
    if not state.exists():
        return f"nothing to stop: no detached server recorded in {state}"
    info = json.loads(state.read_text())
    pid = info.get("pid")
    if alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        if alive(pid):
            os.killpg(pid, signal.SIGKILL)
    remove_haproxy_files(runtime.home)  # what a server killed before its own clean-up left behind
    state.unlink(missing_ok=True)
    return f"stopped the server at {info['url']} (pid {pid})"
