"""Errors raised by the schema codec.

    SchemaError
    ├── EncodeError        a record does not match the schema
    ├── DecodeError        bytes are not a record this codec can read (has .reason and .data)
    └── RegistryError      the Schema Registry could not be reached or refused a schema

Decode errors keep the raw bytes and, once known, the Kafka coordinates, so that the dead-letter
topic and replay tooling get everything they need from the exception alone.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["DecodeError", "DecodeReason", "EncodeError", "RegistryError", "SchemaError"]

DecodeReason = Literal[
    "empty",
    "bad-magic",
    "truncated",
    "unknown-fingerprint",
    "unknown-schema-id",
    "registry-required",
    "malformed",
]


class SchemaError(Exception):
    """Base class of every error the codec raises."""


class EncodeError(SchemaError):
    """A record could not be encoded because it does not match the schema."""


class RegistryError(SchemaError):
    """The Schema Registry could not be reached, or it refused to register or return a schema."""


class DecodeError(SchemaError):
    """Bytes could not be decoded into a record.

    ``reason`` is one of a fixed set of short codes (see ``DecodeReason``), suitable as a metric
    label and as the dead-letter reason; ``detail`` is a sentence for people.
    """

    def __init__(
        self,
        reason: DecodeReason,
        detail: str,
        data: bytes,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> None:
        self.reason: DecodeReason = reason
        self.detail = detail
        self.data = data
        self.topic = topic
        self.partition = partition
        self.offset = offset
        super().__init__(self._message())

    def _message(self) -> str:
        where = ""
        if self.topic is not None:
            where = f" at {self.topic}[{self.partition}]@{self.offset}"
        return f"cannot decode record{where} ({self.reason}): {self.detail}"

    def at(self, topic: str, partition: int, offset: int) -> DecodeError:
        """Return this error located at a Kafka topic, partition and offset."""
        return DecodeError(
            self.reason, self.detail, self.data, topic=topic, partition=partition, offset=offset
        )
