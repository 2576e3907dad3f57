"""What every command group shares: the root `quanyu` group, the runtime, options and helpers."""

from __future__ import annotations

import contextlib
import datetime as dt
from pathlib import Path

import click

from jobs.runtime import Runtime

EXIT_FAILURE = 2
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--ray-address", default=None, help="Ray cluster address [default: $RAY_ADDRESS, else a local Ray].")
@click.pass_context
def cli(ctx: click.Context, ray_address: str | None) -> None:
    """Quanyu: the omnichannel retail ML platform."""
    ctx.ensure_object(dict)
    ctx.obj["ray_address"] = ray_address


@contextlib.contextmanager
def refusing(*kinds: type[BaseException]):
    """What a command's job raises for a reason its user can act on (`kinds`: its message says
    what to do) becomes click's error line and exit 1, never a traceback."""
    try:
        yield
    except kinds as exc:
        raise click.ClickException(str(exc)) from None


def runtime_of(ctx: click.Context, lake: str | None) -> Runtime:
    """Where this command works: QUANYU_HOME, the lake, the tracking store, the Ray address. A
    QUANYU_HOME that does not exist yet is created readable by this user alone (it will hold the
    tracking store, keys, logs); `quanyu serve` also makes an existing one private."""
    runtime = Runtime.resolve(lake=lake, ray_address=ctx.obj.get("ray_address"))
    runtime.home.mkdir(mode=0o700, parents=True, exist_ok=True)
    return runtime


def human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


lake_option = click.option("--lake", "lake", type=click.Path(file_okay=False), default=None,
                           help="Lake folder [default: $QUANYU_HOME/lake].")


def parse_dates(values: tuple[str, ...]) -> list[dt.date] | None:
    if not values:
        return None
    out = []
    for v in values:
        try:
            out.append(dt.date.fromisoformat(v))
        except ValueError:
            raise click.BadParameter(f"{v!r} is not a date; use YYYY-MM-DD", param_hint="--date") from None
    return out


def retrain_config(path: str | None = None):
    """The retrain config (the promotion gates): `path`, else configs/retrain.yaml, else defaults."""
    from jobs.retrain import RetrainConfig

    path = path or (str(CONFIGS / "retrain.yaml") if (CONFIGS / "retrain.yaml").exists() else None)
    return RetrainConfig.from_yaml(path) if path else RetrainConfig()


class FamilyName(click.Choice):
    """A family of the registry (plugins included), read when the command runs."""

    def __init__(self) -> None:
        super().__init__(())

    @property
    def choices(self) -> tuple[str, ...]:
        from models.families import FAMILIES

        return tuple(FAMILIES)

    @choices.setter
    def choices(self, value) -> None:  # click.Choice's __init__ sets it; the registry answers instead
        pass


def gates() -> dict:
    """Each family's promotion gate: configs/retrain.yaml's, the built-in one where it names none."""
    return retrain_config().gates  # the config fills in the built-in gate of a family it names none for
