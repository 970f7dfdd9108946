"""The ``trafficreel`` command line."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import sys
import threading
from enum import StrEnum
from importlib.metadata import version as package_version
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from trafficreel import __version__
from trafficreel.schemas import exchange_schema

from ._cli_common import deserializer_for, err, fit_output, key_values, out, parse_time, reported, settings_of
from ._cli_replay import replay_command
from ._cli_sink import query_command, report_command, sink_command
from .config import Settings, load_settings, stack_env_path
from .errors import ConfigError, StackError, TrafficreelError
from .logs import configure_logging, get_logger
from .render import jsonable, summary_line
from .tail import Position, read_topic
from .topics import TOPIC_NAMES, create_topics, describe_topics, project_topics

__all__ = ["app", "main"]

app = typer.Typer(
    name="trafficreel",
    help=(
        "Record the HTTP traffic of Python services to Kafka, analyse it in ClickHouse, replay it.\n\n"
        "Settings come from flags, then TRAFFICREEL_* environment variables, then the endpoints a running "
        "`trafficreel up` publishes, so in a second terminal `trafficreel tail` just works.\n\n"
        "Example: trafficreel up   # then, elsewhere: trafficreel tail raw --follow"
    ),
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    add_completion=False,
)
topics_app = typer.Typer(help="Create and describe the project's Kafka topics.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")

log = get_logger("trafficreel.cli")


@app.callback()
def _main(
    ctx: typer.Context,
    kafka_bootstrap: Annotated[
        str | None, typer.Option(help="Kafka bootstrap servers [env TRAFFICREEL_KAFKA_BOOTSTRAP].")
    ] = None,
    kafka_config: Annotated[
        list[str] | None,
        typer.Option(
            help="librdkafka property KEY=VALUE, repeatable (security.protocol, sasl.*, ssl.*).",
            metavar="KEY=VALUE",
        ),
    ] = None,
    topic_prefix: Annotated[
        str | None, typer.Option(help="Topic prefix [env TRAFFICREEL_TOPIC_PREFIX].")
    ] = None,
    schema_registry_url: Annotated[
        str | None, typer.Option(help="Schema Registry URL [env TRAFFICREEL_SCHEMA_REGISTRY_URL].")
    ] = None,
    clickhouse_url: Annotated[
        str | None, typer.Option(help="ClickHouse DSN [env TRAFFICREEL_CLICKHOUSE_URL].")
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Embedded stack data [env TRAFFICREEL_DATA_DIR].")
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = None,
    log_format: Annotated[str | None, typer.Option(help="console or json.")] = None,
) -> None:
    with reported(code=2):
        settings = load_settings(
            kafka_bootstrap=kafka_bootstrap,
            kafka_config=key_values(kafka_config, "--kafka-config"),
            topic_prefix=topic_prefix,
            schema_registry_url=schema_registry_url,
            clickhouse_url=clickhouse_url,
            data_dir=data_dir,
            log_level=log_level.upper() if log_level else None,
            log_format=log_format,
        )
    configure_logging(settings.log_level, settings.log_format)
    fit_output()
    ctx.obj = settings


# -- up -----------------------------------------------------------------------------------------


def _running_stack_pid(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


@app.command()
def up(
    ctx: typer.Context,
    kafka_port: Annotated[int, typer.Option(help="Broker port; 0 picks a free one.")] = 0,
    clickhouse_port: Annotated[int, typer.Option(help="ClickHouse HTTP port; 0 picks a free one.")] = 0,
    partitions: Annotated[
        int | None, typer.Option(help="Partitions per topic [env TRAFFICREEL_PARTITIONS].")
    ] = None,
    clickhouse: Annotated[bool, typer.Option(help="Start the embedded ClickHouse too.")] = True,
) -> None:
    """Start the embedded stack: a Kafka broker and ClickHouse on loopback, until Ctrl-C.

    Creates the project's topics, prints the settings other processes need as shell lines, and
    publishes them in <data dir>/stack.env so other trafficreel commands find the stack by themselves.

    Example: trafficreel up --partitions 6
    """
    from .stack import EmbeddedStack
    from .stack._stack import MEMORY_ONLY_NOTE

    settings = settings_of(ctx)
    data_dir = settings.data_dir
    env_file, pid_file = stack_env_path(data_dir), data_dir / "stack.pid"
    other = _running_stack_pid(pid_file)
    if other is not None and other != os.getpid():
        err.print(
            f"error: a stack is already running from {data_dir} (pid {other}); stop it first "
            "or use another --data-dir."
        )
        raise typer.Exit(1)
    stack = EmbeddedStack(
        data_dir=data_dir,
        partitions=partitions or settings.partitions,
        topic_prefix=settings.topic_prefix,
        kafka_port=kafka_port,
        clickhouse_port=clickhouse_port,
        with_clickhouse=clickhouse,
    )
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        with err.status("starting the embedded broker and ClickHouse ..."):
            stack.start()
        data_dir.mkdir(parents=True, exist_ok=True)
        env_file.write_text(stack.env_lines())
        pid_file.write_text(str(os.getpid()))
        log.info(
            "stack started",
            broker=stack.broker.bootstrap,
            clickhouse=stack.clickhouse.url if clickhouse else None,
            data_dir=str(data_dir),
        )
        err.print(f"note: {MEMORY_ONLY_NOTE}")
        err.print(f"topics: {', '.join(f'{k} ({v})' for k, v in stack.topics.items())}")
        err.print(f"settings for other shells (also in {env_file}):")
        out.print(stack.env_lines(), end="")
        sys.stdout.flush()
        err.print("press Ctrl-C to stop")
        while not stopping.wait(0.5):
            if not stack.broker.pid or (clickhouse and not stack.clickhouse.ping()):
                raise StackError(f"a part of the stack stopped unexpectedly; logs in {data_dir / 'logs'}")
    except TrafficreelError as exc:
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(1) from exc
    finally:
        with err.status("stopping ..."):
            stack.stop()
        for path in (env_file, pid_file):
            if _running_stack_pid(pid_file) in (None, os.getpid()):
                path.unlink(missing_ok=True)
        log.info("stack stopped")


# -- topics -------------------------------------------------------------------------------------


def _topic_names(settings: Settings, names: list[str] | None) -> list[str]:
    return [settings.topic(n) for n in names] if names else project_topics(settings.topic_prefix)


@topics_app.command("create")
def topics_create(
    ctx: typer.Context,
    names: Annotated[
        list[str] | None, typer.Argument(help="Topics (short or full names); default: all.")
    ] = None,
    partitions: Annotated[int | None, typer.Option(help="Partitions [env TRAFFICREEL_PARTITIONS].")] = None,
    replication_factor: Annotated[int | None, typer.Option(help="Replication factor.")] = None,
    config: Annotated[
        list[str] | None,
        typer.Option(help="Topic config KEY=VALUE, e.g. retention.ms=604800000.", metavar="KEY=VALUE"),
    ] = None,
) -> None:
    """Create the project's topics (those that exist are left alone).

    Example: trafficreel topics create --partitions 12 --config retention.ms=604800000
    """
    settings = settings_of(ctx)
    with reported():
        result = create_topics(
            settings.kafka_client_config(),
            _topic_names(settings, names),
            partitions=partitions or settings.partitions,
            replication_factor=replication_factor or settings.replication_factor,
            topic_config=key_values(config, "--config"),
        )
    for name, state in result.items():
        out.print(f"{name}\t{state}")


@topics_app.command("describe")
def topics_describe(
    ctx: typer.Context,
    names: Annotated[
        list[str] | None, typer.Argument(help="Topics (short or full names); default: all.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show partitions, leaders and offsets of the project's topics.

    Example: trafficreel topics describe raw dlq
    """
    settings = settings_of(ctx)
    with reported():
        infos = describe_topics(settings.kafka_client_config(), _topic_names(settings, names))
    if as_json:
        out.print(
            json.dumps(
                [
                    {
                        "topic": i.name,
                        "messages": i.messages,
                        "partitions": [
                            {"partition": p.partition, "leader": p.leader, "low": p.low, "high": p.high}
                            for p in i.partitions
                        ],
                    }
                    for i in infos
                ]
            )
        )
        return
    table = Table("topic", "partitions", "messages", "offsets (low-high per partition)")
    for info in infos:
        table.add_row(
            info.name,
            str(len(info.partitions)),
            str(info.messages),
            " ".join(f"{p.partition}:{p.low}-{p.high}" for p in info.partitions),
        )
    out.print(table)
    if not infos:
        err.print("no project topics found; create them with: trafficreel topics create")


# -- tail ---------------------------------------------------------------------------------------


def _is_default(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is None or source.name == "DEFAULT"


class OutputFormat(StrEnum):
    json = "json"
    summary = "summary"


@app.command()
def tail(
    ctx: typer.Context,
    topic: Annotated[
        str, typer.Argument(help=f"Topic: a short name ({', '.join(TOPIC_NAMES)}) or a full one.")
    ] = "raw",
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", "-b", help="Start at the oldest record.")
    ] = False,
    offset: Annotated[
        int | None, typer.Option(help="Start at this offset (in each chosen partition).")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Start at this time: ISO-8601, an age (15m, 2h) or epoch ms.")
    ] = None,
    last: Annotated[
        int, typer.Option("--last", "-l", help="Without another start: the last N per partition.")
    ] = 10,
    partition: Annotated[
        list[int] | None, typer.Option("--partition", "-p", help="Only these partitions.")
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new records, like tail -f.")
    ] = False,
    max_records: Annotated[int | None, typer.Option("--max", "-n", help="Stop after N records.")] = None,
    output: Annotated[
        OutputFormat | None,
        typer.Option(
            "--format",
            help="json lines (default when piped) or "
            "one readable summary line per record (default on a terminal).",
        ),
    ] = None,
) -> None:
    """Print the records of a topic, decoded, from an offset, a time or its tail.

    Never joins a consumer group and never commits offsets. Undecodable records are reported on
    stderr with their reason, partition and offset, and reading goes on.

    Examples:
      trafficreel tail raw --follow
      trafficreel tail business --since 15m --format json | jq .request.method
      trafficreel tail raw -p 0 --offset 1200 -n 5
    """
    settings = settings_of(ctx)
    chosen = [x for x in (from_beginning, offset is not None, since is not None) if x]
    if len(chosen) > 1:
        raise typer.BadParameter("give at most one of --from-beginning, --offset and --since")
    if from_beginning:
        position = Position("beginning")
    elif offset is not None:
        position = Position("offset", offset)
    elif since is not None:
        position = Position("time", parse_time(since))
    elif follow and _is_default(ctx, "last"):
        position = Position("end")  # tail -f with no start given: only what arrives from now on
    else:
        position = Position("last", last)
    fmt = output or (OutputFormat.summary if sys.stdout.isatty() else OutputFormat.json)
    bad = 0
    with reported(), contextlib.suppress(KeyboardInterrupt):
        for item in read_topic(
            settings.kafka_client_config(),
            settings.topic(topic),
            position,
            deserializer=deserializer_for(settings),
            partitions=partition,
            follow=follow,
            max_records=max_records,
        ):
            if item.error is not None:
                bad += 1
                err.print(f"undecodable: {item.error}")
                continue
            assert item.record is not None
            if fmt is OutputFormat.json:
                line: dict[str, Any] = {
                    "topic": item.topic,
                    "partition": item.partition,
                    "offset": item.offset,
                    "timestamp_ms": item.timestamp_ms,
                    "record": jsonable(item.record),
                }
                sys.stdout.write(json.dumps(line, separators=(",", ":")) + "\n")
            else:
                sys.stdout.write(f"{item.partition}:{item.offset} {summary_line(item.record)}\n")
            sys.stdout.flush()
    if bad:
        raise typer.Exit(3)


# -- stream -------------------------------------------------------------------------------------


@app.command()
def stream(
    ctx: typer.Context,
    rules: Annotated[
        Path | None,
        typer.Option(
            help="YAML rules file: classes, route templates, redaction, sampling, outputs "
            "[env TRAFFICREEL_STREAM_RULES]."
        ),
    ] = None,
    group: Annotated[
        str | None, typer.Option(help="Consumer group shared by the workers [env TRAFFICREEL_STREAM_GROUP].")
    ] = None,
    health_port: Annotated[
        int | None,
        typer.Option(
            help="Port of /metrics, /live and /ready; 0 turns it off [env TRAFFICREEL_HEALTH_PORT]."
        ),
    ] = None,
    check: Annotated[
        bool, typer.Option("--check", help="Check the settings and the rules file, print them, and exit.")
    ] = False,
) -> None:
    """Run a stream worker: classify, normalise, redact and sample the raw topic into class topics.

    Reads <prefix>.raw as the consumer group, writes <prefix>.business, .k8s-api, .probe, .scrape
    (as the rules file's outputs say) and puts what it cannot read into <prefix>.dlq with the reason.
    Start more workers with the same group to share the partitions. Stop with Ctrl-C or SIGTERM.

    Example: trafficreel stream --rules rules.yaml
    """
    settings = settings_of(ctx)
    updates = {
        k: v
        for k, v in {
            "stream_rules": rules,
            "stream_group": group,
            "health_port": health_port,
        }.items()
        if v is not None
    }
    if updates:
        settings = settings.model_copy(update=updates)
    with reported():
        from trafficreel.streams import load_rules
        from trafficreel.streams.app import StreamWorker, settle_partitions

        loaded = load_rules(settings.stream_rules)
        try:
            if not check:  # checking connects nowhere
                settings = settle_partitions(settings)
            worker = StreamWorker(settings, loaded)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
    if check:
        table = Table("class", "topic", box=box.SIMPLE_HEAD)
        for cls, topic in sorted(worker.outputs.items()):
            table.add_row(cls, topic or "(dropped)")
        out.print(
            f"input {worker.input_topic}, dead letters {worker.dlq_topic}, group {settings.stream_group}"
        )
        out.print(table)
        out.print(
            "rules, in order: "
            + ", ".join(f"{r.name}->{r.traffic_class}" for r in worker.processor.classifier.rules)
            + ", default->business"
        )
        return
    _run_worker(worker, settings)


def _run_worker(worker: Any, settings: Settings) -> None:
    import faust

    from trafficreel.health import HealthServer

    health = None
    if settings.health_port:
        with reported():
            try:
                health = HealthServer(
                    worker.readiness, port=settings.health_port, registry=worker.registry
                ).start()
            except OSError as exc:
                raise ConfigError(
                    f"cannot serve /metrics and /ready on port {settings.health_port}: {exc.strerror}; "
                    "set TRAFFICREEL_HEALTH_PORT (0 turns it off)"
                ) from exc
    try:
        faust.Worker(worker.app, loglevel=settings.log_level, quiet=True).execute_from_commandline()
    finally:
        if health is not None:
            health.stop()


# -- sink, query and report (their own module) -------------------------------------------------

app.command("sink")(sink_command)
app.command("query")(query_command)
app.command("report")(report_command)


# -- demo ---------------------------------------------------------------------------------------


@app.command()
def demo(
    ctx: typer.Context,
    seconds: Annotated[float, typer.Option(help="How long to drive traffic.", min=2)] = 40.0,
    rate: Annotated[float, typer.Option(help="Requests per second the traffic driver sends.", min=1)] = 30.0,
) -> None:
    """Run the whole pipeline on this machine in about two minutes, then stop it and keep the data.

    Starts the embedded broker and ClickHouse, a stream worker, a sink, and two recorded sample
    services (FastAPI under uvicorn, Flask under gunicorn) that call each other and a stub
    Kubernetes API through the real kubernetes client; drives traffic; prints the report; replays
    the order lookups against a second build with one deliberate change and prints the comparison.

    Example: trafficreel demo   # afterwards: trafficreel report --since 1h
    """
    from .demo import run_demo

    settings = settings_of(ctx)
    other = _running_stack_pid(settings.data_dir / "stack.pid")
    if other is not None:
        err.print(
            f"error: `trafficreel up` is running from {settings.data_dir} (pid {other}); "
            "stop it first or give the demo another --data-dir."
        )
        raise typer.Exit(1)
    with reported():
        run_demo(settings, seconds=seconds, rate=rate, out=out, err=err)


# -- version ------------------------------------------------------------------------------------


@app.command()
def version() -> None:
    """Print the versions of trafficreel, its record schema and the libraries it runs on."""
    import confluent_kafka
    import fastavro

    schema = exchange_schema()
    out.print(f"trafficreel {__version__}")
    out.print(
        f"record schema {schema.json['namespace']}.{schema.json['name']} "
        f"fingerprint {schema.fingerprint.hex()} (CRC-64-AVRO, little-endian)"
    )
    out.print(
        f"python {platform.python_version()}, confluent-kafka {package_version('confluent-kafka')}, "
        f"librdkafka {confluent_kafka.libversion()[0]}, fastavro {fastavro.__version__}"
    )


# -- replay (its own module) ---------------------------------------------------------------------

app.command("replay")(replay_command)


def main() -> None:
    """Entry point of the ``trafficreel`` command."""
    app()
