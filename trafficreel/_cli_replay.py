"""``trafficreel replay``: select recorded requests, send them to a target, compare, report."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ._cli_common import err, out, parse_time, plain, reported, settings_of
from .errors import ConfigError
from .logs import get_logger

if TYPE_CHECKING:
    from trafficreel.replay import ReplayConfig, Selection, Summary

__all__ = ["replay_command"]

log = get_logger("trafficreel.replay")


class BodyMode(StrEnum):
    auto = "auto"
    json = "json"
    text = "text"
    digest = "digest"
    none = "none"


class ReplayFormat(StrEnum):
    table = "table"
    json = "json"


def _run(factory: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run on uvloop when it is installed (a faster loop for the sender), else on asyncio's."""
    try:
        import uvloop

        loop_factory: Any = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is in the replay extra on Linux and macOS
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(factory())


def _header_pairs(items: list[str] | None, option: str) -> dict[str, str]:
    pairs = {}
    for item in items or ():
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise typer.BadParameter(f"{item!r} is not 'Name: value'", param_hint=option)
        pairs[name.strip()] = value.strip()
    return pairs


def _select(ctx: typer.Context, **o: Any) -> Selection:
    from trafficreel.codec import deserializer
    from trafficreel.replay import Filters, KafkaSource, parse_range, parse_status
    from trafficreel.replay._select import select_offsets, select_sql, select_window

    settings = settings_of(ctx)
    filters = Filters(
        services=tuple(o["service"] or ()),
        classes=tuple(o["traffic_class"] or ()),
        methods=tuple(m.upper() for m in o["method"] or ()),
        routes=tuple(o["route"] or ()),
        statuses=tuple(parse_status(s) for s in o["status"] or ()),
        headers=tuple((n, v) for n, v in _header_pairs(o["header"], "--header").items()),
    )
    source = KafkaSource(
        settings.kafka_client_config(), deserializer(settings), commit_group=o["commit_group"]
    )
    try:
        if o["where"]:
            from trafficreel.clickhouse import connect

            return select_sql(source, connect(settings), o["where"], filters, o["limit"])
        topic = settings.topic(o["topic"])
        if o["since"]:
            since = parse_time(o["since"]) * 1000
            until = parse_time(o["until"]) * 1000 if o["until"] else None
            return select_window(source, topic, since, until, filters, o["limit"])
        ranges = [parse_range(r) for r in o["range"]]
        return select_offsets(source, topic, ranges, filters, o["limit"])
    finally:
        source.close()


def _config(ctx: typer.Context, **o: Any) -> ReplayConfig:
    from trafficreel.replay import (
        CompareOptions,
        NoiseModel,
        Pacing,
        PathPrefix,
        ReplayConfig,
        Rewrites,
        load_rewrites,
    )

    settings = settings_of(ctx)
    rewrites = load_rewrites(o["rewrites"]) if o["rewrites"] else Rewrites()
    prefixes = []
    for item in o["path_prefix"] or ():
        old, sep, new = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"{item!r} is not OLD=NEW", param_hint="--path-prefix")
        prefixes.append(PathPrefix(**{"from": old, "to": new}))
    rewrites = rewrites.merged(
        Rewrites(
            set_headers=_header_pairs(o["set_header"], "--set-header"),
            remove_headers=list(o["remove_header"] or ()),
            host=o["host"],
            path_prefix=prefixes,
        )
    )
    if o["asap"]:
        pacing = Pacing(mode="asap")
    elif o["rate"]:
        pacing = Pacing(mode="rate", rate=o["rate"])
    else:
        pacing = Pacing(mode="original", speed=o["speed"])
    noise = None
    if o["noise"]:
        try:
            noise = NoiseModel.from_json(json.loads(Path(o["noise"]).read_text()).get("noise", {}))
        except (OSError, ValueError, AttributeError) as exc:
            raise ConfigError(f"Cannot read learned noise from {o['noise']}: {exc}") from exc
    return ReplayConfig(
        target=o["target"],
        allow=[*settings.replay_allow, *(o["allow"] or ())],
        baseline=o["baseline"],
        pacing=pacing,
        concurrency=o["concurrency"],
        loops=o["loops"],
        timeout=o["timeout"],
        rewrites=rewrites,
        send_incomplete=o["send_incomplete"],
        compare=CompareOptions(
            headers=tuple(h.lower() for h in o["compare_header"] or ()),
            ignore=tuple(o["ignore"] or ()),
            unordered=tuple(o["unordered"] or ()),
            body=o["body"].value,
        ),
        learn_noise=o["learn_noise"],
        noise=noise,
        verify_tls=not o["insecure"],
    )


def _dry_run(selection: Selection, config: ReplayConfig) -> None:
    from trafficreel.replay import Skipped
    from trafficreel.replay._request import prepare
    from trafficreel.replay._rewrite import Rewriter

    rewriter = Rewriter(config.rewrites)
    host = (config.rewrites.host or config.target.split("://", 1)[-1]).encode("latin-1")
    for item in selection.records:
        prepared = prepare(item.record, rewriter, default_host=host, send_incomplete=config.send_incomplete)
        where = f"{item.topic}[{item.partition}]@{item.offset} ({item.origin})"
        if isinstance(prepared, Skipped):
            out.print(f"# {prepared.record['id']} {where}: skipped, {prepared.reason}")
            continue
        head, _, _ = prepared.wire.partition(b"\r\n\r\n")
        out.print(f"# {item.record['id']} {where}, body {len(prepared.body)} bytes")
        out.print(head.decode("latin-1"), markup=False)
        out.print()
    out.print(f"{len(selection)} requests would be sent to {config.target}; nothing was sent.")


def _print_summary(summary: Summary, data: dict[str, Any]) -> None:
    v = data["verdicts"]
    rate = data["match_rate"]
    out.print(
        f"replayed {data['total']}: {v.get('match', 0)} match, {v.get('differ', 0)} differ, "
        f"{v.get('error', 0)} errors, {v.get('skipped', 0)} skipped"
        + (f"; match rate {rate:.1%}" if rate is not None else "")
    )
    routes = Table(
        "route",
        "requests",
        "match",
        "differ",
        "error",
        "skipped",
        "match rate",
        box=box.SIMPLE_HEAD,
        title="By route",
        title_justify="left",
    )
    for row in data["routes"][:25]:
        mr = row["match_rate"]
        routes.add_row(
            plain(row["route"]),
            *(str(row[k]) for k in ("requests", "match", "differ", "error", "skipped")),
            "" if mr is None else f"{mr:.1%}",
        )
    out.print(routes)
    if data["status_changes"]:
        changes = Table(
            "expected", "got", "count", box=box.SIMPLE_HEAD, title="Status changes", title_justify="left"
        )
        for row in data["status_changes"][:15]:
            changes.add_row(str(row["from"]), str(row["to"]), str(row["count"]))
        out.print(changes)
    if data["top_differences"]:
        diffs = Table("location", "count", box=box.SIMPLE_HEAD, title="Top differences", title_justify="left")
        for row in data["top_differences"][:15]:
            diffs.add_row(plain(row["location"]), str(row["count"]))
        out.print(diffs)
    lat = data["latency_ms"]
    latency = Table("", "p50 ms", "p99 ms", box=box.SIMPLE_HEAD, title="Latency", title_justify="left")
    for name in ("recorded", "replayed"):
        latency.add_row(name, *(_ms(lat[name][q]) for q in ("p50", "p99")))
    pace = data["pacing_lateness_ms"]
    latency.add_row("send lateness", _ms(pace["p50"]), _ms(pace["p99"]))
    out.print(latency)
    if data["sent_with_redacted_headers"]:
        out.print(
            f"note: {data['sent_with_redacted_headers']} requests carried a redacted header value; "
            "inject credentials with --set-header or a rewrite file"
        )
    for title, counts in (
        ("skipped", data["skipped"]),
        ("sent incomplete", data["sent_incomplete"]),
        ("errors", data["errors"]),
        ("faults", data["faults"]),
    ):
        if counts:
            out.print(f"{title}: " + ", ".join(f"{k} {n}" for k, n in sorted(counts.items())))


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def replay_command(
    ctx: typer.Context,
    target: Annotated[str, typer.Option(help="Origin to replay against, e.g. http://orders.staging:8080.")],
    allow: Annotated[
        list[str] | None,
        typer.Option(
            help="Allow this target (host, host:port, origin or glob); repeatable "
            "[env TRAFFICREEL_REPLAY_ALLOW]. Anything not allowed is refused."
        ),
    ] = None,
    topic: Annotated[
        str, typer.Option(help="Topic to read (short names: business, k8s-api, raw ...).")
    ] = "business",
    range_: Annotated[
        list[str] | None,
        typer.Option(
            "--range", help="PARTITION[:START[-END]] offsets to replay (END exclusive); repeatable."
        ),
    ] = None,
    since: Annotated[
        str | None, typer.Option("--from", help="Window start: ISO-8601, an age (15m) or epoch ms.")
    ] = None,
    until: Annotated[str | None, typer.Option("--to", help="Window end (exclusive); default: now.")] = None,
    where: Annotated[
        str | None,
        typer.Option(help="SQL condition on the ClickHouse `exchanges` table selecting what to replay."),
    ] = None,
    limit: Annotated[
        int | None, typer.Option(help="Replay at most N records (the first in recorded order).")
    ] = None,
    service: Annotated[list[str] | None, typer.Option(help="Only this service; repeatable.")] = None,
    traffic_class: Annotated[
        list[str] | None, typer.Option("--class", help="Only this traffic class; repeatable.")
    ] = None,
    method: Annotated[list[str] | None, typer.Option(help="Only this method; repeatable.")] = None,
    route: Annotated[
        list[str] | None, typer.Option(help="Only routes matching this glob; repeatable.")
    ] = None,
    status: Annotated[
        list[str] | None, typer.Option(help="Only recorded statuses: 404, 5xx or 400-499; repeatable.")
    ] = None,
    header: Annotated[
        list[str] | None, typer.Option(help="Only requests whose header matches: 'Name: regex'; repeatable.")
    ] = None,
    rewrites: Annotated[
        Path | None, typer.Option(help="YAML rewrite file (set/remove headers, host, prefixes, regexes).")
    ] = None,
    set_header: Annotated[
        list[str] | None, typer.Option(help="Set a header: 'Authorization: Bearer ...'; repeatable.")
    ] = None,
    remove_header: Annotated[list[str] | None, typer.Option(help="Remove a header; repeatable.")] = None,
    host: Annotated[
        str | None, typer.Option(help="Send this Host header instead of the recorded one.")
    ] = None,
    path_prefix: Annotated[
        list[str] | None, typer.Option(help="Rewrite a path prefix: OLD=NEW; repeatable.")
    ] = None,
    send_incomplete: Annotated[
        bool, typer.Option(help="Send requests whose body was not kept whole (else they are skipped).")
    ] = False,
    speed: Annotated[float, typer.Option(help="Original pacing scaled by this factor (0.1 to 100).")] = 1.0,
    rate: Annotated[float | None, typer.Option(help="Send at this fixed rate (requests/s) instead.")] = None,
    asap: Annotated[bool, typer.Option(help="Send as fast as the concurrency bound allows.")] = False,
    concurrency: Annotated[int, typer.Option(help="Requests in flight at most.", min=1)] = 32,
    loops: Annotated[int, typer.Option(help="Replay the selection N times.", min=1)] = 1,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each response.")] = 30.0,
    baseline: Annotated[
        str | None,
        typer.Option(help="Also replay against this baseline build and compare with it, not the record."),
    ] = None,
    learn_noise: Annotated[
        bool,
        typer.Option(help="Send each request twice to the baseline (or target) and ignore what differs."),
    ] = False,
    noise: Annotated[
        Path | None, typer.Option(help="Reuse the noise learned in an earlier --report file.")
    ] = None,
    compare_header: Annotated[
        list[str] | None, typer.Option(help="Compare this response header too; repeatable.")
    ] = None,
    ignore: Annotated[
        list[str] | None,
        typer.Option(help="Ignore this JSON path ($.meta.id, $..updated_at) or header:NAME; repeatable."),
    ] = None,
    unordered: Annotated[
        list[str] | None, typer.Option(help="Compare the array at this JSON path ignoring order.")
    ] = None,
    body: Annotated[
        BodyMode, typer.Option(help="Body comparison: auto, json, text, digest or none.")
    ] = BodyMode.auto,
    report: Annotated[
        Path | None, typer.Option(help="Write the JSON report (summary, noise, every result) here.")
    ] = None,
    results_table: Annotated[
        bool, typer.Option(help="Store every result in the ClickHouse table replay_results.")
    ] = False,
    results_topic: Annotated[
        str | None, typer.Option(help="Produce every result as JSON to this topic.")
    ] = None,
    commit_group: Annotated[
        str | None, typer.Option(help="Commit the read offsets to this consumer group (never by default).")
    ] = None,
    insecure: Annotated[bool, typer.Option(help="Do not verify the target's TLS certificate.")] = False,
    dry_run: Annotated[
        bool, typer.Option(help="Print the requests that would be sent; send nothing.")
    ] = False,
    fail_on_diff: Annotated[
        bool, typer.Option(help="Exit with status 3 when any request differs or fails (for CI gates).")
    ] = False,
    output: Annotated[
        ReplayFormat, typer.Option("--format", "-f", help="table or json.")
    ] = ReplayFormat.table,
) -> None:
    """Replay recorded requests against a target and compare the responses.

    Choose what to replay with --range (Kafka offsets), --from/--to (a time window) or --where (SQL on
    ClickHouse; records Kafka no longer holds are rebuilt from ClickHouse). Requests are rebuilt byte
    for byte: raw path and query, Host, header order and duplicates, body. The target must be allowed
    with --allow or TRAFFICREEL_REPLAY_ALLOW.

    Examples:

      trafficreel replay --target http://127.0.0.1:8080 --allow 127.0.0.1:8080 --from 15m --speed 2

      trafficreel replay --target http://candidate:8080 --baseline http://stable:8080 --allow '*:8080'
        --where "route = '/v1/orders/{id}' AND status >= 500" --learn-noise --report out.json
    """
    options = dict(locals())
    options.pop("ctx")
    options["range"] = options.pop("range_") or []
    if not (options["range"] or since or where):
        raise typer.BadParameter("choose what to replay: --range, --from or --where", param_hint="selection")
    if sum(bool(x) for x in (options["range"], since, where)) > 1:
        raise typer.BadParameter("use only one of --range, --from and --where", param_hint="selection")
    if rate and asap:
        raise typer.BadParameter("use either --rate or --asap", param_hint="--rate")
    with reported():
        try:
            config = _config(ctx, **options)
            if not dry_run:
                from trafficreel.replay import check_allowed

                check_allowed(config.target, config.allow)
                if config.baseline:
                    check_allowed(config.baseline, config.allow)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        with err.status("selecting records ..."):
            selection = _select(ctx, **options)
        if selection.left_out:
            err.print("left out: " + ", ".join(f"{k} {n}" for k, n in sorted(selection.left_out.items())))
        if dry_run:
            _dry_run(selection, config)
            return
        summary = _replay(ctx, selection, config, report, results_table, results_topic)
    data = summary.to_json()
    if output is ReplayFormat.json:
        out.print_json(json.dumps(data))
    else:
        _print_summary(summary, data)
    if fail_on_diff and (summary.verdicts["differ"] or summary.verdicts["error"]):
        raise typer.Exit(3)


def _replay(
    ctx: typer.Context,
    selection: Selection,
    config: ReplayConfig,
    report: Path | None,
    results_table: bool,
    results_topic: str | None,
) -> Summary:
    from trafficreel.replay import ClickHouseResults, KafkaResults, Replayer, ResultStore, Summary

    settings = settings_of(ctx)
    replayer = Replayer(config)
    summary = Summary()
    stores: list[ResultStore] = []
    if results_table:
        from trafficreel.clickhouse import connect

        stores.append(ClickHouseResults(connect(settings), summary.run_id))
    if results_topic:
        stores.append(
            KafkaResults(settings.kafka_client_config(), settings.topic(results_topic), summary.run_id)
        )
    total = len(selection) * config.loops
    log.info(
        "replay started",
        target=config.target,
        records=len(selection),
        loops=config.loops,
        run_id=summary.run_id,
    )

    async def main() -> None:
        with Progress(
            TextColumn("replay"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[state]}"),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        ) as progress:
            task = progress.add_task("replay", total=total, state="")
            async for result in replayer.run(selection.records):
                summary.add(result, keep=report is not None)
                for store in stores:
                    store.write(result)
                v = summary.verdicts
                progress.update(
                    task, advance=1, state=f"{v['match']} match {v['differ']} differ {v['error']} err"
                )

    try:
        _run(main)
    finally:
        for store in stores:
            store.close()
    noise = replayer.noise.to_json()
    if report is not None:
        report.write_text(json.dumps(summary.report(noise), indent=1, default=str))
        err.print(f"report written to {report}")
    log.info("replay finished", run_id=summary.run_id, **dict(summary.verdicts))
    return summary
