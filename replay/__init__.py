"""Replay recorded traffic against a target, from any Kafka offset, time or SQL selection.

The command line is ``trafficreel replay``; the same engine is an async API for chaos and
regression tooling::

    from trafficreel.replay import Fault, Pacing, ReplayConfig, Replayer

    config = ReplayConfig(
        target="http://orders.staging:8080",
        allow=["orders.staging:8080"],
        pacing=Pacing(mode="original", speed=2.0),
        faults=[Fault(kind="delay", seconds=0.5, share=0.1)],
    )
    async for result in Replayer(config).run(selection.records):
        if result.verdict == "differ":
            print(result.route, [d.location for d in result.differences])
"""

from ._archive import rebuild_from_clickhouse, row_to_exchange
from ._client import Reply, Target
from ._compare import Comparator, CompareOptions, Difference, NoiseModel, Observed
from ._engine import (
    Fault,
    FaultHook,
    Pacing,
    ReplayConfig,
    Replayer,
    ReplayResult,
    check_allowed,
    observed_record,
    observed_reply,
)
from ._request import Prepared, Skipped, prepare
from ._results import ClickHouseResults, KafkaResults, ResultStore, Summary
from ._rewrite import PathPrefix, Rewriter, Rewrites, Substitution, load_rewrites
from ._select import (
    Filters,
    KafkaSource,
    OffsetRange,
    Selected,
    Selection,
    parse_range,
    parse_status,
    select_offsets,
    select_sql,
    select_window,
)
from .errors import ReplayError, RewriteError, SelectionError, SendError, TargetNotAllowedError

__all__ = [
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
]
