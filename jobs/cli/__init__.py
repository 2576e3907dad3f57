"""The `quanyu` command line: a thin layer over the jobs, one module per command group. Every
failure the user can fix is printed as one clear message with a non-zero exit; tracebacks only
with QUANYU_DEBUG=1.

Other packages add command groups through the `quanyu.commands` entry points (the benchmarks'
`quanyu bench` is one): the jobs never import what sits above them."""

from __future__ import annotations

import logging
import os
import sys
from importlib.metadata import entry_points

import click

from jobs.cli import cluster, data, demo, registry, serving, training  # noqa: F401  (each adds its commands)
from jobs.cli.common import EXIT_FAILURE, cli

__all__ = ["cli", "main"]


def add_plugin_commands() -> None:
    """The command groups other installed packages register under `quanyu.commands`."""
    for point in entry_points(group="quanyu.commands"):
        if point.name not in cli.commands:
            cli.add_command(point.load(), point.name)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `quanyu` console script."""
    from lake.store import LakeError
    from pydantic import ValidationError

    from jobs.runtime import RayStartError

    # artifact downloads print a progress bar per file; the jobs say what they do instead
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # "Creating initial MLflow database tables...": the first command in a new QUANYU_HOME
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    add_plugin_commands()
    try:
        code = cli.main(args=argv, prog_name="quanyu", standalone_mode=False)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except (LakeError, ValueError, ValidationError, RayStartError) as exc:
        click.echo(f"quanyu: {exc}", err=True)
        sys.exit(EXIT_FAILURE)
    except Exception as exc:  # a bug: say so plainly, keep the traceback for QUANYU_DEBUG
        if os.environ.get("QUANYU_DEBUG"):
            raise
        click.echo(f"quanyu: internal error: {type(exc).__name__}: {exc} (set QUANYU_DEBUG=1 for the traceback)", err=True)
        sys.exit(EXIT_FAILURE)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
