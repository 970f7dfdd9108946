"""``trafficreel sink``, ``query`` and ``report``: load the records into ClickHouse and ask it."""

from __future__ import annotations

import json
import signal
import sys
import time
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from ._cli_common import cell, deserializer_for, out, parse_time, plain, reported, settings_of
from .config import mask_dsn
from .errors import ClickHouseError
from .logs import get_logger
from .render import json_default, jsonable

__all__ = ["QueryFormat", "print_report", "query_command", "report_command", "sink_command"]


def sink_command(
    ctx: typer.Context,
    topics: Annotated[
        list[str] | None,
        typer.Option(
            "--topic", "-t", help="Topic to load, short or full name; repeatable [default: the class topics]."
        ),
    ] = None,
    group: Annotated[str, typer.Option(help="Consumer group shared by the sinks.")] = "trafficreel-sink",
    health_port: Annotated[
        int | None,
        typer.Option(
            help="Port of /metrics, /live and /ready; 0 turns it off [env TRAFFICREEL_HEALTH_PORT]."
        ),
    ] = None,
    batch_rows: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Records that make a batch due; up to 4x while the insert before runs "
            "[env TRAFFICREEL_SINK_BATCH_ROWS, 10000].",
        ),
    ] = None,
    batch_bytes: Annotated[
        int | None,
        typer.Option(
            min=1024,
            help="Bytes of records that make a batch due; up to 4x while the insert before runs "
            "[env TRAFFICREEL_SINK_BATCH_BYTES, 32 MiB].",
        ),
    ] = None,
    batch_seconds: Annotated[
        float | None,
        typer.Option(
            min=0.01,
            max=300,
            help="Seconds records wait at most before they are inserted "
            "[env TRAFFICREEL_SINK_BATCH_SECONDS, 0.5].",
        ),
    ] = None,
) -> None:
    """Load the class topics into ClickHouse's `exchanges` table, each record exactly once.

    Applies the schema migrations first. Offsets are committed only after rows are inserted; a
    restarted sink resumes after the last stored offset; records sent twice upstream are stored
    once. Undecodable values and rows ClickHouse refuses go to <prefix>.dlq with the reason.
    Stop with Ctrl-C or SIGTERM.

    Example: trafficreel sink
    """
    from prometheus_client import CollectorRegistry, Counter, Histogram

    from trafficreel.clickhouse import connect
    from trafficreel.sinks import ClickHouseSink, migrate

    from .health import HealthServer

    settings = settings_of(ctx)
    names = [settings.topic(t) for t in (topics or ["business", "k8s-api", "probe", "scrape"])]
    with reported():
        client = connect(settings)
        migrate(client, settings.clickhouse_ttl_days)
    registry = CollectorRegistry()
    rows = Counter(
        "trafficreel_sink_rows",
        "Records consumed and handled (inserted, skipped as duplicates or dead-lettered).",
        registry=registry,
    )
    seconds = Histogram(
        "trafficreel_sink_batch_seconds",
        "Time from a batch's first record read to its offsets committed.",
        registry=registry,
    )
    insert_seconds = Histogram(
        "trafficreel_sink_insert_seconds",
        "Time ClickHouse took for one insert it accepted.",
        registry=registry,
    )

    def on_batch(count: int, elapsed: float) -> None:
        rows.inc(count)
        seconds.observe(elapsed)

    loader = ClickHouseSink(
        lambda: connect(settings),
        settings.kafka_client_config(),
        names,
        settings.topic("dlq"),
        group=group,
        deserializer=deserializer_for(settings),
        batch_rows=batch_rows or settings.sink_batch_rows,
        batch_bytes=batch_bytes or settings.sink_batch_bytes,
        batch_seconds=batch_seconds or settings.sink_batch_seconds,
        on_batch=on_batch,
        on_insert=lambda _rows, elapsed: insert_seconds.observe(elapsed),
    )
    from trafficreel.sinks.metrics import SinkCollector

    registry.register(SinkCollector(loader))
    port = settings.health_port if health_port is None else health_port
    health = None
    if port:
        health = HealthServer(
            lambda: _sink_readiness(loader),
            port=port,
            registry=registry,
        ).start()
    signal.signal(signal.SIGTERM, lambda *_: loader.stop())
    log = get_logger("trafficreel.sinks")
    log.info("sink started", topics=names, group=group, clickhouse=mask_dsn(settings.clickhouse_url))
    from trafficreel._gc import tune_gc_for_worker

    tune_gc_for_worker()
    try:
        loader.run()
    except KeyboardInterrupt:
        pass
    finally:
        if health is not None:
            health.stop()
    log.info("sink stopped", **vars(loader.stats))


class QueryFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


def query_command(
    ctx: typer.Context,
    sql: Annotated[str, typer.Argument(help="The SQL to run (the table is `exchanges`).")],
    output: Annotated[
        QueryFormat, typer.Option("--format", "-f", help="table, json (one object per line) or csv.")
    ] = QueryFormat.table,
) -> None:
    """Run SQL on the ClickHouse holding the records and print the result.

    Example: trafficreel query "SELECT route, count() AS n FROM exchanges GROUP BY route ORDER BY n DESC"
    """
    import csv

    from trafficreel.clickhouse import connect_or_embedded

    settings = settings_of(ctx)
    with reported(), connect_or_embedded(settings) as client:
        from clickhouse_connect.driver.exceptions import ClickHouseError as DriverError

        try:
            result = client.query(sql)
        except DriverError as exc:
            raise ClickHouseError(f"the query failed: {str(exc).splitlines()[0][:2000]}") from exc
    names = list(result.column_names)
    if output is QueryFormat.json:
        for row in result.result_rows:
            row_json = json.dumps(jsonable(dict(zip(names, row, strict=True))), default=json_default)
            out.print_json(row_json, indent=None)
    elif output is QueryFormat.csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(names)
        for row in result.result_rows:
            writer.writerow([cell(v) for v in row])
    else:
        table = Table(*names, box=box.SIMPLE_HEAD)
        for row in result.result_rows:
            table.add_row(*(plain(v) for v in row))
        out.print(table)
        out.print(f"{len(result.result_rows)} rows")


def _sink_readiness(loader: Any) -> tuple[bool, str]:
    """Unready without partitions, and while ClickHouse has been refusing for over 30 s."""
    if loader.failing_since is not None and time.monotonic() - loader.failing_since > 30:
        seconds = int(time.monotonic() - loader.failing_since)
        return False, f"ClickHouse failing for {seconds} s, retrying: {loader.last_error}"
    return bool(loader.assigned), f"{len(loader.assigned)} partitions assigned"


def report_command(
    ctx: typer.Context,
    since: Annotated[
        str, typer.Option(help="Start of the window: an age (15m, 2h, 1d), ISO-8601 or epoch ms.")
    ] = "1h",
    service: Annotated[str | None, typer.Option(help="Only this service.")] = None,
    limit: Annotated[int, typer.Option(help="Rows per section.", min=1)] = 15,
    output: Annotated[QueryFormat, typer.Option("--format", "-f", help="table or json.")] = QueryFormat.table,
) -> None:
    """Summarise the recorded traffic: by class and service, top routes, Kubernetes API load per pod.

    Counts are shown as stored and as estimated real traffic (re-weighted by sampling).

    Example: trafficreel report --since 2h --service orders
    """
    from trafficreel.clickhouse import connect_or_embedded
    from trafficreel.sinks.report import build_report

    if output is QueryFormat.csv:
        raise typer.BadParameter("the report prints as a table or as json", param_hint="--format")

    settings = settings_of(ctx)
    since_ms = parse_time(since)
    with reported(), connect_or_embedded(settings) as client:
        from clickhouse_connect.driver.exceptions import ClickHouseError as DriverError

        try:
            summary = build_report(client, since_ms, service, limit)
        except DriverError as exc:
            raise ClickHouseError(
                f"the report query failed: {str(exc).splitlines()[0][:500]}; "
                "has `trafficreel sink` run against this ClickHouse (it creates the tables)?"
            ) from exc
    if output is QueryFormat.json:
        out.print_json(json.dumps(jsonable(summary.as_json())))
        return
    print_report(summary, since_ms, service)


def print_report(summary: Any, since_ms: int, service: str | None = None) -> None:
    """The report as terminal tables (also printed by the demo)."""
    start = datetime.fromtimestamp(since_ms / 1000, UTC).isoformat(timespec="seconds")
    out.print(f"traffic since {start}" + (f" for {service}" if service else ""))
    for title, rows in (
        ("Traffic by class and service", summary.by_class),
        ("Top routes (business, probes, scrapes)", summary.top_routes),
        ("Kubernetes API load per pod", summary.k8s_per_pod),
    ):
        if not rows:
            out.print(f"\n{title}: nothing recorded")
            continue
        table = Table(*rows[0].keys(), title=title, box=box.SIMPLE_HEAD, title_justify="left")
        for row in rows:
            table.add_row(*(plain(v) for v in row.values()))
        out.print(table)
