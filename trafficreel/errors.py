"""Errors of the trafficreel command line, configuration and embedded stack.

    TrafficreelError
    ├── ConfigError        a setting is missing, unknown or invalid
    ├── StackError         the embedded broker or ClickHouse could not start or answer
    ├── KafkaError         the Kafka cluster refused or could not be reached
    └── ClickHouseError    ClickHouse could not be reached or refused a request

Messages are full sentences that say what to do next.
"""

from __future__ import annotations

__all__ = ["ClickHouseError", "ConfigError", "KafkaError", "StackError", "TrafficreelError"]


class TrafficreelError(Exception):
    """Base class of the errors the command line reports without a traceback."""


class ConfigError(TrafficreelError):
    """A setting is missing, unknown or has an invalid value."""


class StackError(TrafficreelError):
    """The embedded broker or ClickHouse could not be started or did not answer."""


class KafkaError(TrafficreelError):
    """The Kafka cluster could not be reached or refused a request."""


class ClickHouseError(TrafficreelError):
    """ClickHouse could not be reached or refused a request."""
