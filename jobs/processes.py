"""Servers started for a while and stopped with everything they started: what the benchmarks
and the tests run `quanyu serve`, uvicorn, `mlflow server` and their peers with."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from serving.families import wait_until


def free_port() -> int:
    """A TCP port free on loopback now (for a server about to start)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_for_later() -> int:
    """A loopback port free now, for a server that binds it much later (HAProxy's metrics and
    stats ports, chosen when Ray starts and bound when Serve starts HAProxy): taken below the
    kernel's ephemeral range, which every outgoing connection draws from meanwhile — a port of
    that range was taken by a client socket in one full test run before HAProxy could bind it."""
    import random

    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for port in random.sample(range(10000, max(10001, low)), 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    return free_port()


def start_server(command: list[str], env: dict, ready_url: str, log: Path, timeout: float = 300,
                 cwd: Path | None = None) -> subprocess.Popen:
    """Start `command` in its own session (its log appended to `log`) and wait until `ready_url`
    answers below 500; raises RuntimeError if it exits first, TimeoutError if it never answers."""
    process = subprocess.Popen(command, env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT, cwd=cwd,
                               start_new_session=True)

    def up() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"{command[:3]} exited ({process.returncode}); see {log}")
        try:
            return requests.get(ready_url, timeout=2).status_code < 500
        except requests.RequestException:
            return False

    if not wait_until(up, timeout, 1.0):
        stop_server(process)
        raise TimeoutError(f"{command[:3]} did not answer within {timeout} s; see {log}")
    return process


@contextmanager
def s3_server(log: Path, buckets: tuple[str, ...] = ()) -> Iterator[dict[str, str]]:
    """moto's S3-protocol server (`moto[s3]`, a dev dependency: the one S3-protocol server the
    package registries offer) on a free loopback port, `buckets` made; yields the variables
    pyarrow, pyiceberg and Quanyu read the endpoint and keys from. Stopped when the block ends."""
    import pyarrow.fs as pafs

    port = free_port()
    env = {"AWS_ACCESS_KEY_ID": "quanyu", "AWS_SECRET_ACCESS_KEY": "quanyu-secret", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    process = start_server([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], dict(os.environ),
                           f"{env['AWS_ENDPOINT_URL']}/moto-api/", log, timeout=60)
    try:
        store = pafs.S3FileSystem(endpoint_override=env["AWS_ENDPOINT_URL"], access_key=env["AWS_ACCESS_KEY_ID"],
                                  secret_key=env["AWS_SECRET_ACCESS_KEY"], region=env["AWS_DEFAULT_REGION"],
                                  allow_bucket_creation=True)
        for bucket in buckets:
            store.create_dir(bucket)
        yield env
    finally:
        stop_server(process, grace=10)


def stop_server(process: subprocess.Popen, leader_first: bool = False, grace: float = 60.0) -> None:
    """Stop a server started by start_server (or any process leading its own session) and
    everything it started, killing what is still there after `grace` seconds. `leader_first`:
    signal only the server and give it that long to shut down what it started (as `quanyu serve
    stop` does) before signalling its whole process group."""
    if process.poll() is None and leader_first:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
            return
        except subprocess.TimeoutExpired:
            pass
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def alive(pid: int | None) -> bool:
    """Whether process `pid` runs: a child of ours that ended (a zombie) counts as gone."""
    if not pid:
        return False
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our own child, and it has ended
            return False
    except ChildProcessError:  # not our child: ask the system
        pass
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True
