"""`quanyu serve`, and the answers of the served champions on the command line: `quanyu sites`, `quanyu matching`."""

from __future__ import annotations

import json

import click

from jobs.cli.common import cli, refusing, runtime_of


@cli.group("serve", invoke_without_command=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the HTTP ingress listens on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--alias", default="champion", show_default=True, help="Registry alias every family follows.")
@click.option("--poll-seconds", type=click.FloatRange(0.1, 3600), default=10.0, show_default=True,
              help="How often each family checks its alias.")
@click.option("--detach", is_flag=True, help="Run in the background; return once every family answers.")
@click.option("--ingress", type=click.Choice(["auto", "haproxy", "proxy"]), default="auto", show_default=True,
              help="What listens on host:port: HAProxy, forwarding each request straight to a replica of its "
                   "family (one hop; needs the haproxy binary), or Serve's proxy actor (a handle call more). "
                   "auto: HAProxy when installed.")
@click.pass_context
def serve_cmd(ctx, host, port, alias, poll_seconds, detach, ingress) -> None:
    """Serve the champions over HTTP (Ray Serve). `quanyu serve stop` stops a detached server."""
    if ctx.invoked_subcommand is not None:
        return
    from jobs import serve as job

    runtime = runtime_of(ctx, None)
    if detach:
        with refusing(RuntimeError, TimeoutError):
            info = job.detach(runtime, host, port, alias, poll_seconds, ingress=ingress)
        click.echo(f"serving at {info['url']} (pid {info['pid']}, log {info['log']})")
        for f in info["families"]:
            click.echo(f"  {f['family']:<9} quanyu-{f['family']} " + (f"v{f['version']} ({alias})" if f["version"] else
                  f"no {alias} yet: its endpoints answer 503 until one is promoted"))
        if info["key"]:
            click.echo(f"API key (kept in {runtime.home / 'api_key'}): {info['key']}")
        click.echo(f"API docs: {info['url']}/docs · planner's page: {info['url']}/planner")
        return
    with refusing(RuntimeError, TimeoutError):
        job.foreground(runtime, host, port, alias, poll_seconds, say=click.echo, ingress=ingress)


@serve_cmd.command("stop")
@click.pass_context
def serve_stop(ctx) -> None:
    """Stop the server `quanyu serve --detach` started."""
    from jobs import serve as job

    click.echo(job.stop(runtime_of(ctx, None)))


@cli.group()
def sites() -> None:
    """Site recommendations for the next stores (the location family's champion)."""


@sites.command("recommend")
@click.option("--city", required=True, help="City to plan in.")
@click.option("--k", "k", type=click.IntRange(1, 50), default=5, show_default=True, help="How many sites.")
@click.option("--min-distance-km", type=click.FloatRange(0, 100), default=None,
              help="Minimum distance to own stores and between picks.")
@click.option("--max-rent", type=click.FloatRange(0), default=None, help="Maximum rent per m² per month, in the lake's currency.")
@click.option("--exclude", multiple=True, help="Site id to leave out (repeatable).")
@click.option("--include", multiple=True, help="Site id to force in (repeatable).")
@click.option("--objective", type=click.Choice(["net_gain", "coverage"]), default="net_gain", show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
@click.option("--alias", default="champion", show_default=True, help="Which registered version answers.")
@click.pass_context
def sites_recommend(ctx, city, k, min_distance_km, max_rent, exclude, include, objective, fmt, alias) -> None:
    """Choose k candidate sites in a city for the largest net gain (or population coverage)."""
    from jobs.recommend_sites import load_recommender, render
    from lake.settings import DEFAULT_CURRENCY
    from models.location.recommender import RecommendError

    runtime = runtime_of(ctx, None)
    recommender, version = load_recommender(runtime.tracking_uri, alias)
    with refusing(RecommendError):
        result = recommender.recommend(city, k, min_distance_km=min_distance_km, max_rent=max_rent,
                                       exclude=list(exclude), include=list(include), objective=objective)
    click.echo(render(result, version, recommender.meta.get("data_date"), fmt,
                      recommender.meta.get("currency", DEFAULT_CURRENCY)), nl=False)


@cli.group()
def matching() -> None:
    """Products for a member, members for a product (the matching family's champion)."""


def _matching_answer(alias: str, ask) -> tuple[dict, str]:
    """`ask(recommender)` on the matching version `alias`, as a dict with its model version."""
    from jobs.recommend_sites import load_recommender
    from models.matching.recommender import MatchingError

    recommender, version = load_recommender(runtime_of(click.get_current_context(), None).tracking_uri, alias,
                                            family="matching")
    with refusing(MatchingError):
        return {"model_version": version, **ask(recommender).as_dict()}, version


@matching.command("recommend")
@click.option("--member", "member_id", required=True, help="The member's id (an unknown id gets popular products).")
@click.option("--k", "k", type=click.IntRange(1, 100), default=10, show_default=True)
@click.option("--channel", type=click.Choice(["online", "offline"]), default=None, help="Only what sells there.")
@click.option("--alias", default="champion", show_default=True, help="Which registered version answers.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def matching_recommend(member_id, k, channel, alias, as_json) -> None:
    """The k products a member is most likely to buy next."""
    answer, version = _matching_answer(alias, lambda r: r.recommend(member_id, k, channel))
    if as_json:
        click.echo(json.dumps(answer, indent=1, ensure_ascii=False))
        return
    how = f"fallback {answer['fallback']}" if answer["fallback"] else "ranker"
    click.echo(f"{member_id}: {len(answer['items'])} product(s), quanyu-matching v{version} ({how})")
    for rank, item in enumerate(answer["items"], 1):
        score = "" if item["score"] is None else f"{item['score']:.4f}"
        click.echo(f"{rank:>3}  {item['sku_id']:<24} {score}")


@matching.command("audience")
@click.option("--sku", "sku_id", default=None, help="A product in the catalogue.")
@click.option("--category", default=None, help="A new product's category (instead of --sku).")
@click.option("--list-price", type=click.FloatRange(0, min_open=True), default=None, help="A new product's list price.")
@click.option("--style", default=None, help="A new product's style.")
@click.option("--k", "k", type=click.IntRange(1, 10_000), default=20, show_default=True, help="How many members.")
@click.option("--alias", default="champion", show_default=True, help="Which registered version answers.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def matching_audience(sku_id, category, list_price, style, k, alias, as_json) -> None:
    """The k members most likely to buy a product, the catalogue's or a new one described by its
    attributes, and the segments that fit it best."""
    described = {k: v for k, v in (("category", category), ("list_price", list_price), ("style", style)) if v}
    if bool(sku_id) == bool(described):
        raise click.UsageError("give --sku, or a new product's --category (with --list-price, --style)")
    answer, version = _matching_answer(alias, lambda r: r.audience(k, sku_id=sku_id or None,
                                                                   attributes=described or None))
    if as_json:
        click.echo(json.dumps(answer, indent=1, ensure_ascii=False))
        return
    product = sku_id or "new product " + ", ".join(f"{k}={v}" for k, v in described.items())
    click.echo(f"{product}: {len(answer['members'])} member(s), quanyu-matching v{version}")
    for note in answer["notes"]:
        click.echo(f"  note: {note}")
    click.echo("segments that fit best: " + "; ".join(f"{s['segment']} ({s['members']:,} members)"
                                                         for s in answer["segments"]))
    for rank, m in enumerate(answer["members"], 1):
        click.echo(f"{rank:>4}  {m['member_id']:<24} {m['score']:.4f}  {m['segment']}")
