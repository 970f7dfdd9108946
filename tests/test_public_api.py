"""The public surface: exported names are the intended ones and all exist; private modules are marked."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import trafficreel

PUBLIC = {
    "trafficreel.schemas": {
        "CONFLUENT_MAGIC",
        "CURRENT_VERSION",
        "SCHEMA_DIR",
        "SINGLE_OBJECT_MAGIC",
        "Body",
        "BodyState",
        "ConfluentRegistry",
        "DecodeError",
        "DecodeReason",
        "Deserializer",
        "Direction",
        "EncodeError",
        "Exchange",
        "Header",
        "Outcome",
        "OutcomeKind",
        "Peer",
        "Redaction",
        "RegistryError",
        "Request",
        "Response",
        "SchemaError",
        "SchemaRegistry",
        "Serializer",
        "Source",
        "TopicContext",
        "Trace",
        "WriterSchema",
        "blank_body",
        "exchange_schema",
        "exchange_schema_path",
        "id_time_ms",
        "known_versions",
        "new_id",
        "sample_exchange",
        "topic_subject",
    },
    "trafficreel.schemas.errors": {
        "DecodeError",
        "DecodeReason",
        "EncodeError",
        "RegistryError",
        "SchemaError",
    },
    "trafficreel.stack": {
        "EmbeddedBroker",
        "EmbeddedClickHouse",
        "EmbeddedStack",
    },
    "trafficreel.errors": {"ClickHouseError", "ConfigError", "KafkaError", "StackError", "TrafficreelError"},
    "trafficreel.config": {
        "ENV_PREFIX",
        "Settings",
        "default_data_dir",
        "is_secret",
        "load_settings",
        "mask_dsn",
        "stack_env_path",
    },
    "trafficreel.clickhouse": {"connect", "connect_or_embedded"},
    "trafficreel.producers": {
        "DEFAULT_BODY_TYPES",
        "MARKER",
        "BodyCapture",
        "BodyPolicy",
        "PendingExchange",
        "Recorder",
        "RecorderConfig",
        "RecorderStats",
        "Redactor",
        "TrafficRecorder",
        "TrafficRecorderWSGI",
        "instrument",
        "not_recorded",
        "uninstrument",
    },
    "trafficreel.producers.metrics": {"RecorderCollector", "register"},
    "trafficreel.streams": {
        "BUILTIN_RULES",
        "DEFAULT_JSON_KEYS",
        "DEFAULT_PATTERNS",
        "CapStore",
        "Classifier",
        "DeadLetter",
        "Decision",
        "Processed",
        "Processor",
        "RouteNormaliser",
        "Rule",
        "Sampler",
        "SamplingPolicy",
        "StreamRedactor",
        "StreamRules",
        "dead_letter_headers",
        "head_hash",
        "load_rules",
        "normalise_path",
    },
    "trafficreel.streams.app": {
        "CLASS_TOPICS",
        "StreamWorker",
        "build_app",
        "faust_credentials",
        "settle_partitions",
    },
    "trafficreel.streams.metrics": {"StreamMetrics"},
    "trafficreel.health": {"HealthServer", "Readiness"},
    "trafficreel.codec": {"deserializer", "serializer"},
    "trafficreel.sinks": {
        "COLUMNS",
        "MIGRATIONS",
        "ClickHouseSink",
        "Migration",
        "SinkStats",
        "exchanges_ddl",
        "migrate",
    },
    "trafficreel.replay": {
        "ClickHouseResults",
        "Comparator",
        "CompareOptions",
        "Difference",
        "Fault",
        "FaultHook",
        "Filters",
        "KafkaResults",
        "KafkaSource",
        "NoiseModel",
        "Observed",
        "OffsetRange",
        "Pacing",
        "PathPrefix",
        "Prepared",
        "ReplayConfig",
        "ReplayError",
        "ReplayResult",
        "Replayer",
        "Reply",
        "ResultStore",
        "RewriteError",
        "Rewriter",
        "Rewrites",
        "Selected",
        "Selection",
        "SelectionError",
        "SendError",
        "Skipped",
        "Substitution",
        "Summary",
        "Target",
        "TargetNotAllowedError",
        "check_allowed",
        "load_rewrites",
        "observed_record",
        "observed_reply",
        "parse_range",
        "parse_status",
        "prepare",
        "rebuild_from_clickhouse",
        "row_to_exchange",
        "select_offsets",
        "select_sql",
        "select_window",
    },
    "trafficreel.replay.testing": {"CaptureServer", "Captured", "Responder", "fixed_response"},
    "trafficreel.replay.errors": {
        "ReplayError",
        "RewriteError",
        "SelectionError",
        "SendError",
        "TargetNotAllowedError",
    },
    "trafficreel.demo": {"DemoResult", "run_demo"},
    "trafficreel.demo.services": {"inventory_app", "k8s_api_server", "orders_app"},
    "trafficreel.sinks.report": {"Report", "build_report"},
    "trafficreel.sinks.metrics": {"SinkCollector"},
    "trafficreel.topics": {
        "TOPIC_NAMES",
        "PartitionInfo",
        "TopicInfo",
        "create_topics",
        "describe_topics",
        "high_watermarks",
        "partition_counts",
        "project_topics",
    },
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_exported_names_are_the_intended_ones(module: str) -> None:
    """Each public module's __all__ is exactly the intended set, and every name in it exists."""
    mod = importlib.import_module(module)
    assert set(mod.__all__) == PUBLIC[module]
    missing = [name for name in mod.__all__ if not hasattr(mod, name)]
    assert missing == []


def test_every_package_declares_all() -> None:
    """Every package and public module under trafficreel declares __all__."""
    lacking = []
    packages = ["trafficreel", *(f"trafficreel.{leaf}" for leaf in trafficreel.SOURCE_FOLDERS)]
    infos = [
        info
        for pkg in packages
        for info in pkgutil.walk_packages(importlib.import_module(pkg).__path__, f"{pkg}.")
    ]
    for info in infos:
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        mod = importlib.import_module(info.name)
        if not hasattr(mod, "__all__"):
            lacking.append(info.name)
    assert lacking == []


def test_errors_share_one_root() -> None:
    """Every error the schemas package raises is a SchemaError; the CLI's are TrafficreelErrors."""
    from trafficreel import errors
    from trafficreel.schemas import errors as schema_errors

    assert all(
        issubclass(getattr(schema_errors, n), schema_errors.SchemaError)
        for n in schema_errors.__all__
        if n != "DecodeReason"
    )
    assert all(issubclass(getattr(errors, n), errors.TrafficreelError) for n in errors.__all__)
