"""`quanyu cluster` (a local autoscaling Ray) and `quanyu jobs` (Ray jobs submitted to a cluster)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from jobs.cli.common import CONFIGS, cli, refusing, runtime_of
from jobs.runtime import auth_env, cluster_state


@cli.group("jobs")
def jobs_cmd() -> None:
    """Run quanyu commands on a remote Ray cluster through the Ray Jobs API."""


_address_option = click.option("--address", required=True, help="The cluster's job server, e.g. http://HEAD:8265.")


def _jobs_auth(address: str) -> None:
    """The token of a cluster `quanyu cluster up` started (other clusters: set RAY_AUTH_MODE=token
    and RAY_AUTH_TOKEN yourself, docs/cluster.md)."""
    os.environ.update(auth_env(runtime_of(click.get_current_context(), None).home, address))


def _remote(call, *args):
    try:
        return call(*args)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    except Exception as exc:  # the job server's answer: an unknown job id, …
        raise click.ClickException(f"the job server refused: {str(exc).splitlines()[0][:300]}") from None


@jobs_cmd.command("submit", context_settings={"ignore_unknown_options": True})
@_address_option
@click.option("--no-wait", is_flag=True, help="Print the job id and return; `quanyu jobs logs` shows the rest.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED, required=True)
def jobs_submit(address, no_wait, command) -> None:
    """Submit `quanyu COMMAND…` (after --) with this project as working_dir; stream its logs and
    exit with its exit status. Example: quanyu jobs submit --address http://HEAD:8265 -- retrain --date 2026-11-24"""
    from jobs import submit

    _jobs_auth(address)
    # a tracking server travels with the job; a local store (a path on this machine) cannot
    tracking = os.environ.get("MLFLOW_TRACKING_URI", "")
    env = {"MLFLOW_TRACKING_URI": tracking} if tracking.startswith(("http://", "https://", "databricks")) else None
    job_id = _remote(submit.submit, address, list(command), env)
    click.echo(f"submitted {job_id}: quanyu {' '.join(command)}", err=True)
    if no_wait:
        click.echo(job_id)
        return
    try:
        _remote(submit.stream, address, job_id)
    except KeyboardInterrupt:
        click.echo(f"\nstopped following; the job goes on: quanyu jobs status --address {address} {job_id}", err=True)
        sys.exit(130)
    final = _remote(submit.wait, address, job_id, 60.0)
    code = _remote(submit.exit_code, address, job_id)
    click.echo(f"{job_id}: {final} (exit {code})", err=True)
    sys.exit(code)


@jobs_cmd.command("status")
@_address_option
@click.argument("job_id")
def jobs_status(address, job_id) -> None:
    """A job's status and message."""
    from jobs import submit

    _jobs_auth(address)
    info = _remote(submit.status, address, job_id)
    click.echo(f"{info['job_id']}: {info['status']}  {info['entrypoint']}" + (f"\n  {info['message']}" if info["message"] else ""))


@jobs_cmd.command("logs")
@_address_option
@click.argument("job_id")
def jobs_logs(address, job_id) -> None:
    """A job's logs so far."""
    from jobs import submit

    _jobs_auth(address)
    click.echo(_remote(submit.logs, address, job_id), nl=False)


@jobs_cmd.command("stop")
@_address_option
@click.argument("job_id")
def jobs_stop(address, job_id) -> None:
    """Stop a running job."""
    from jobs import submit

    _jobs_auth(address)
    stopped = _remote(submit.stop, address, job_id)
    click.echo(f"{job_id}: " + ("stopping" if stopped else "already finished"))


@cli.group("cluster")
def cluster_cmd() -> None:
    """A local autoscaling Ray cluster (fake multi-node provider) to watch a job grow and shrink it."""


@cluster_cmd.command("up")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, exists=True),
              default=str(CONFIGS / "cluster" / "local.yaml"), show_default=True)
@click.option("--port", type=click.IntRange(1024, 65535), default=None, help="The head's port [default: a free one].")
@click.pass_context
def cluster_up(ctx, config_path, port) -> None:
    """Start a head with no CPUs and the autoscaler; workers come when tasks need them."""
    from jobs import cluster

    runtime = runtime_of(ctx, None)
    with refusing(RuntimeError, TimeoutError):
        info = cluster.up(Path(config_path), runtime.home, port)
    click.echo(f"local cluster up at {info['address']} (pid {info['pid']}, log {info['log']})\n"
               f"  run on it:  quanyu --ray-address {info['address']} retrain\n"
               f"  or submit:  quanyu jobs submit --address {info['jobs']} -- retrain\n"
               f"  watch it:   quanyu cluster status   (or: ray status --address {info['address']})\n"
               "  stop it:    quanyu cluster down")


@cluster_cmd.command("status")
@click.pass_context
def cluster_status(ctx) -> None:
    """The local cluster's nodes now."""
    from jobs import cluster

    runtime = runtime_of(ctx, None)
    info = cluster_state(runtime.home)
    if info is None:
        raise click.ClickException("no local cluster is up; quanyu cluster up")
    with refusing(RuntimeError):
        found = cluster.nodes(info["address"], runtime.home)
    workers = [n for n in found if not n["head"]]
    click.echo(f"{info['address']}: head + {len(workers)} worker node(s), {sum(n['cpus'] for n in workers):g} CPU(s)")


@cluster_cmd.command("down")
@click.pass_context
def cluster_down(ctx) -> None:
    """Stop the head, the autoscaler and every worker node."""
    from jobs import cluster

    click.echo(cluster.down(runtime_of(ctx, None).home))
