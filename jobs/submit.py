"""`quanyu jobs submit | status | logs | stop`: run a quanyu command on a remote Ray cluster through
the Ray Jobs API, with this project as the job's working_dir, and stream its logs back.

The entrypoint is `python -m jobs.cli <args>` inside the uploaded copy of the project, so the job
runs exactly the code that was submitted; the cluster's nodes need the project's dependencies
(the same constraints.txt). The job's exit status comes back as the command's exit status.
"""

from __future__ import annotations

import asyncio
import re
import shlex
import sys
import time

from jobs.tracking import REPO

# what never travels with a job: environments, local data, caches
EXCLUDES = [".venv", ".venv-peers", ".quanyu", ".git", "**/__pycache__", ".pytest_cache", ".hypothesis",
            "mlruns", "mlartifacts", "*.egg-info", "docs/img"]
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def client(address: str):
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except Exception as exc:  # connection refused, not a Ray dashboard, …
        raise RuntimeError(f"cannot reach the Ray job server at {address} ({str(exc).splitlines()[0][:200]}); "
                           "is the cluster's dashboard up (port 8265)?") from None


def submit(address: str, args: list[str], env: dict[str, str] | None = None) -> str:
    """Submit `quanyu <args>`; returns the job id."""
    entrypoint = "python -m jobs.cli " + shlex.join(args)
    runtime_env = {"working_dir": str(REPO), "excludes": EXCLUDES}
    if env:
        runtime_env["env_vars"] = env
    jobs = client(address)
    deadline = time.monotonic() + 60
    while True:
        try:
            return jobs.submit_job(entrypoint=entrypoint, runtime_env=runtime_env,
                                   metadata={"submitted_by": "quanyu jobs submit"})
        except RuntimeError as exc:
            # a head that has just started answers before its job agent is up: wait for it
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def stream(address: str, job_id: str, out=sys.stdout) -> None:
    """Print the job's logs as they come until it ends."""
    jobs = client(address)

    async def follow() -> None:
        async for chunk in jobs.tail_job_logs(job_id):
            out.write(chunk)
            out.flush()

    asyncio.run(follow())


def wait(address: str, job_id: str, timeout: float | None = None) -> str:
    jobs, deadline = client(address), None if timeout is None else time.monotonic() + timeout
    while True:
        status = str(jobs.get_job_status(job_id).value)
        if status in TERMINAL or (deadline and time.monotonic() > deadline):
            return status
        time.sleep(0.5)


def exit_code(address: str, job_id: str) -> int:
    """The entrypoint's exit status: 0 when it succeeded, its own code when Ray reports one, else 2."""
    info = client(address).get_job_info(job_id)
    status = str(info.status.value)
    if status == "SUCCEEDED":
        return 0
    found = re.search(r"exit code (\d+)", info.message or "")
    return int(found.group(1)) if found else 2


def status(address: str, job_id: str) -> dict:
    info = client(address).get_job_info(job_id)
    return {"job_id": job_id, "status": str(info.status.value), "entrypoint": info.entrypoint,
            "message": info.message, "start_time": info.start_time, "end_time": info.end_time}


def logs(address: str, job_id: str) -> str:
    return client(address).get_job_logs(job_id)


def stop(address: str, job_id: str) -> bool:
    return client(address).stop_job(job_id)
