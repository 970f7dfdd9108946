"""The ClickHouse schema as versioned migrations, applied at start.

Each migration is a list of statements, each idempotent (``IF NOT EXISTS``), recorded in
``schema_migrations`` once applied. Two sinks starting together may both run a migration: the
statements are idempotent and the record of it is a ReplacingMergeTree row, so that is harmless.

The main table, ``exchanges``, holds everything a faithful replay needs (raw path and query bytes,
headers in order with duplicates, kept bodies, encodings, body states) and the Kafka coordinates
of the record it came from:

- ``PARTITION BY toDate(start_time)`` (daily), ``ORDER BY (service, traffic_class, route,
  start_time, id)``: per-service, per-class, per-route time ranges read little;
- ``ReplacingMergeTree``: a record stored twice (same id, hence same sort key) collapses at the
  next merge; the sink already keeps duplicates out (see ``_sink``), this is the last safety net;
- headers as ``Array(Tuple(name String, value String))``: order and duplicates kept, filterable
  with ``arrayExists``; bodies ``ZSTD``-compressed; bloom-filter skip indexes on id and trace id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trafficreel.logs import get_logger

__all__ = ["MIGRATIONS", "Migration", "exchanges_ddl", "migrate"]

log = get_logger("trafficreel.sinks")

_BODY = """
    {p}_body_data Nullable(String) CODEC(ZSTD(3)),
    {p}_body_size UInt64,
    {p}_body_sha256 Nullable(FixedString(32)),
    {p}_body_content_type LowCardinality(Nullable(String)),
    {p}_body_content_encoding LowCardinality(Nullable(String)),
    {p}_body_declared_length Nullable(UInt64),
    {p}_body_state LowCardinality(String),"""


def exchanges_ddl(ttl_days: int | None = None) -> str:
    ttl = f"\nTTL toDateTime(start_time) + INTERVAL {int(ttl_days)} DAY" if ttl_days else ""
    return f"""
CREATE TABLE IF NOT EXISTS exchanges
(
    id UUID,
    start_time DateTime64(6, 'UTC'),
    duration_us UInt64,
    direction LowCardinality(String),
    service LowCardinality(String),
    service_version LowCardinality(Nullable(String)),
    pod LowCardinality(Nullable(String)),
    namespace LowCardinality(Nullable(String)),
    node LowCardinality(Nullable(String)),
    container_id Nullable(String),
    k8s_api_host LowCardinality(Nullable(String)),
    recorder LowCardinality(Nullable(String)),
    remote_address Nullable(String),
    remote_port Nullable(UInt16),
    local_address Nullable(String),
    local_port Nullable(UInt16),
    forwarded_for Nullable(String),
    method LowCardinality(String),
    scheme LowCardinality(String),
    host Nullable(String),
    path String,
    query String,
    http_version LowCardinality(String),
    request_headers Array(Tuple(name String, value String)),{_BODY.format(p="request")}
    status Nullable(UInt16),
    response_headers Array(Tuple(name String, value String)),
    response_trailers Array(Tuple(name String, value String)),{_BODY.format(p="response")}
    outcome LowCardinality(String),
    exception_type Nullable(String),
    exception_message Nullable(String),
    response_started Bool,
    trace_id Nullable(String),
    span_id Nullable(String),
    trace_sampled Nullable(Bool),
    traffic_class LowCardinality(String),
    class_rule LowCardinality(String),
    route LowCardinality(String),
    sample_weight Float64,
    redactions Array(Tuple(location String, rule String, stage String)),
    tags Map(String, String),
    kafka_topic LowCardinality(String),
    kafka_partition UInt32,
    kafka_offset UInt64,
    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX idx_id id TYPE bloom_filter GRANULARITY 4,
    INDEX idx_trace trace_id TYPE bloom_filter GRANULARITY 4
)
ENGINE = ReplacingMergeTree
PARTITION BY toDate(start_time)
ORDER BY (service, traffic_class, route, start_time, id){ttl}
SETTINGS non_replicated_deduplication_window = 10000
"""


# A resource path as the API server reads it: [namespaces/<ns>/]<resource>[/<name>[/<subresource>]].
_K8S_PATH = r"^/apis?/(?:[^/]+/)?v[0-9][a-z0-9]*/(?:namespaces/[^/]+/)?{resource}(?:/{name}(?:/[^/]+)?)?/?$"
_K8S_RESOURCE = _K8S_PATH.format(resource="([^/]+)", name="[^/]+")
_K8S_NAME = _K8S_PATH.format(resource="[^/]+", name="([^/]+)")
# The measures of k8s_api_calls, after its verb and resource (migration 2, then 4).
_K8S_API_CALLS = """
    count() AS calls,
    sum(sample_weight) AS weighted_calls,
    countIf(coalesce(status, 0) >= 400 OR outcome != 'COMPLETED') AS failures,
    quantile(0.99)(duration_us) AS p99_us
FROM exchanges
WHERE traffic_class = 'k8s-api'
GROUP BY minute, service, pod, verb, resource
"""
_K8S_VERBS = (
    f"""
CREATE OR REPLACE VIEW k8s_api_calls AS
WITH extract(path, '{_K8S_NAME}') != '' AS named
SELECT
    toStartOfMinute(start_time) AS minute,
    service,
    pod,
    extract(path, '{_K8S_RESOURCE}') AS resource,
    multiIf(
        method = 'GET' AND match(query, '(^|&)watch=(1|true)'), 'watch',
        method IN ('GET', 'HEAD'), if(named, 'get', 'list'),
        method = 'POST', 'create',
        method = 'PUT', 'update',
        method = 'PATCH', 'patch',
        method = 'DELETE', if(named, 'delete', 'deletecollection'),
        lower(method)
    ) AS verb,"""
    + _K8S_API_CALLS
)


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


_ROUTE_MINUTE = (
    """
CREATE TABLE IF NOT EXISTS route_minute_agg
(
    minute DateTime('UTC'),
    service LowCardinality(String),
    traffic_class LowCardinality(String),
    route LowCardinality(String),
    requests AggregateFunction(count),
    weighted_requests AggregateFunction(sum, Float64),
    errors AggregateFunction(sum, UInt64),
    latency_us AggregateFunction(quantiles(0.5, 0.95, 0.99), UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toDate(minute)
ORDER BY (service, traffic_class, route, minute)
""",
    """
CREATE MATERIALIZED VIEW IF NOT EXISTS route_minute_mv TO route_minute_agg AS
SELECT
    toStartOfMinute(start_time) AS minute,
    service,
    traffic_class,
    route,
    countState() AS requests,
    sumState(sample_weight) AS weighted_requests,
    sumState(toUInt64(coalesce(status, 0) >= 500 OR outcome != 'COMPLETED')) AS errors,
    quantilesState(0.5, 0.95, 0.99)(duration_us) AS latency_us
FROM exchanges
GROUP BY minute, service, traffic_class, route
""",
    """
CREATE VIEW IF NOT EXISTS route_minute AS
SELECT
    minute, service, traffic_class, route,
    countMerge(requests) AS requests,
    sumMerge(weighted_requests) AS weighted_requests,
    sumMerge(errors) AS errors,
    quantilesMerge(0.5, 0.95, 0.99)(latency_us) AS latency_us
FROM route_minute_agg
GROUP BY minute, service, traffic_class, route
""",
)
# Kubernetes verbs from HTTP: a GET with watch=true is a watch; the resource is the path segment
# after the (group/)version and the optional namespaces/<ns>.
_K8S_API = (
    """
CREATE VIEW IF NOT EXISTS k8s_api_calls AS
SELECT
    toStartOfMinute(start_time) AS minute,
    service,
    pod,
    if(method = 'GET' AND match(query, '(^|&)watch=(1|true)'), 'watch', lower(method)) AS verb,
    extract(path, '^/apis?/(?:[^/]+/)?v[0-9][a-z0-9]*/(?:namespaces/[^/]+/)?([^/?]+)') AS resource,"""
    + _K8S_API_CALLS
)
_REMOTES = """
CREATE VIEW IF NOT EXISTS top_remote_addresses AS
SELECT service, remote_address, count() AS requests, sum(sample_weight) AS weighted_requests,
       min(start_time) AS first_seen, max(start_time) AS last_seen
FROM exchanges
WHERE direction = 'INBOUND' AND remote_address IS NOT NULL
GROUP BY service, remote_address
ORDER BY requests DESC
"""
_BODIES = """
CREATE VIEW IF NOT EXISTS body_kept_share AS
SELECT service, part, state, count() AS bodies,
       round(count() / sum(count()) OVER (PARTITION BY service, part), 4) AS share
FROM exchanges
ARRAY JOIN ['request', 'response'] AS part, [request_body_state, response_body_state] AS state
GROUP BY service, part, state
"""

# The highest offset stored of each partition and the id stored there, kept by a view at insert
# time: a sink reads it at every start and rebalance, which must not scan all of exchanges. Rows
# already stored are counted once, after the view exists (max and argMax do not mind seeing a
# row twice). Exchanges is the truth: a sink checks the id is still there before it trusts this.
_KAFKA_OFFSETS = (
    """
CREATE TABLE IF NOT EXISTS kafka_offsets
(
    kafka_topic LowCardinality(String),
    kafka_partition UInt32,
    max_offset SimpleAggregateFunction(max, UInt64),
    id_at_max AggregateFunction(argMax, UUID, UInt64)
)
ENGINE = AggregatingMergeTree
ORDER BY (kafka_topic, kafka_partition)
""",
    """
CREATE MATERIALIZED VIEW IF NOT EXISTS kafka_offsets_mv TO kafka_offsets AS
SELECT kafka_topic, kafka_partition, max(kafka_offset) AS max_offset,
       argMaxState(id, kafka_offset) AS id_at_max
FROM exchanges
GROUP BY kafka_topic, kafka_partition
""",
    """
INSERT INTO kafka_offsets
SELECT kafka_topic, kafka_partition, max(kafka_offset), argMaxState(id, kafka_offset)
FROM exchanges
GROUP BY kafka_topic, kafka_partition
""",
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "exchanges table", (exchanges_ddl(),)),
    Migration(
        2,
        "views: route_minute, k8s_api_calls, top_remote_addresses, body_kept_share",
        (*_ROUTE_MINUTE, _K8S_API, _REMOTES, _BODIES),
    ),
    Migration(
        3,
        "route_minute_agg drops repeated inserts (a retried batch reaches the view again)",
        ("ALTER TABLE route_minute_agg MODIFY SETTING non_replicated_deduplication_window = 10000",),
    ),
    Migration(
        4, "k8s_api_calls: the API server's own verbs (list, create, deletecollection …)", (_K8S_VERBS,)
    ),
    Migration(
        5, "kafka_offsets: each partition's highest stored offset, kept at insert time", _KAFKA_OFFSETS
    ),
)


def migrate(client: Any, ttl_days: int | None = None) -> list[int]:
    """Apply pending migrations and the row TTL (None: none); returns the versions applied now."""
    client.command(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, description String, "
        "applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = ReplacingMergeTree ORDER BY version"
    )
    done = {row[0] for row in client.query("SELECT version FROM schema_migrations").result_rows}
    applied = []
    for migration in MIGRATIONS:
        if migration.version in done:
            continue
        for statement in migration.statements:
            client.command(statement)
        client.insert(
            "schema_migrations", [[migration.version, migration.description]], ["version", "description"]
        )
        applied.append(migration.version)
        log.info("applied migration", version=migration.version, description=migration.description)
    current = client.command(
        "SELECT create_table_query FROM system.tables "
        "WHERE database = currentDatabase() AND name = 'exchanges'"
    )
    if ttl_days:
        client.command(
            f"ALTER TABLE exchanges MODIFY TTL toDateTime(start_time) + INTERVAL {int(ttl_days)} DAY"
        )
    elif " TTL " in str(current):
        client.command("ALTER TABLE exchanges REMOVE TTL")
    return applied
