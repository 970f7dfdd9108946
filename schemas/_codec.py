"""Encode and decode exchange records: fastavro bodies in one of two wire framings.

- Avro single-object encoding (the default): ``C3 01`` + 8-byte CRC-64-AVRO fingerprint of the
  writer schema + the Avro body. Any consumer holding the ``.avsc`` can decode it, no registry.
- Confluent framing, when a Schema Registry is configured: ``00`` + 4-byte big-endian schema id +
  the Avro body, as every Confluent-compatible consumer expects.

The decoder reads both, resolves the writer schema to the reader's (Avro schema resolution, so a
compatible older or newer writer is read, not rejected), and raises one ``DecodeError`` with a
reason code for anything else. Serializers follow confluent-kafka's ``(obj, ctx) -> bytes`` shape.
"""

from __future__ import annotations

import io
import struct
import threading
from collections.abc import Callable, Iterable
from typing import Any, Protocol, cast

from fastavro import schemaless_reader

from ._records import Exchange
from ._registry import SchemaRegistry
from ._schema import WriterSchema, exchange_schema, known_versions
from .errors import DecodeError, EncodeError

__all__ = [
    "CONFLUENT_MAGIC",
    "SINGLE_OBJECT_MAGIC",
    "Deserializer",
    "Serializer",
    "TopicContext",
    "topic_subject",
]

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"
_SINGLE_HEADER = 10  # magic (2) + fingerprint (8)
_CONFLUENT_HEADER = 5  # magic (1) + schema id (4)
_SCHEMA_ID = struct.Struct(">I")
_ENCODE_ERRORS = (ValueError, TypeError, KeyError, AttributeError, OverflowError, struct.error)
_DECODE_ERRORS = (
    IndexError, EOFError, ValueError, struct.error, UnicodeDecodeError, OverflowError, MemoryError,
)  # fmt: skip


class TopicContext(Protocol):
    """The part of confluent-kafka's ``SerializationContext`` the codec reads."""

    @property
    def topic(self) -> str: ...


def topic_subject(topic: str) -> str:
    """Schema Registry subject for a topic's values (Confluent's TopicNameStrategy)."""
    return f"{topic}-value"


class Serializer:
    """Encode an exchange record to wire bytes: ``serializer(record, ctx) -> bytes``.

    Without a registry the output is Avro single-object encoding; with one, Confluent framing under
    the subject ``subject_for(topic)``. ``ctx`` (anything with a ``topic``) picks the subject and may
    be None with no registry. Thread-safe.
    """

    def __init__(
        self,
        *,
        schema: WriterSchema | None = None,
        registry: SchemaRegistry | None = None,
        subject_for: Callable[[str], str] = topic_subject,
        default_topic: str = "trafficreel.raw",
    ) -> None:
        self.schema = schema or exchange_schema()
        self._registry = registry
        self._subject_for = subject_for
        self._default_topic = default_topic
        self._encode = self.schema.encoder
        self._single_header = SINGLE_OBJECT_MAGIC + self.schema.fingerprint
        self._confluent_headers: dict[str, bytes] = {}

    def header_for(self, topic: str | None) -> bytes:
        """Return the framing prefix written before each Avro body for a topic."""
        if self._registry is None:
            return self._single_header
        topic = topic or self._default_topic
        header = self._confluent_headers.get(topic)
        if header is None:
            schema_id = self._registry.register(self._subject_for(topic), self.schema.text)
            header = CONFLUENT_MAGIC + _SCHEMA_ID.pack(schema_id)
            self._confluent_headers[topic] = header
        return header

    def __call__(self, record: Exchange | dict[str, Any], ctx: TopicContext | None = None) -> bytes:
        out = bytearray(self.header_for(ctx.topic if ctx is not None else None))
        try:
            self._encode(record, out)
        except _ENCODE_ERRORS as exc:
            record_id = record.get("id") if isinstance(record, dict) else None
            raise EncodeError(
                f"record {record_id!r} does not match the exchange schema: {type(exc).__name__}: {exc}"
            ) from exc
        return bytes(out)


class Deserializer:
    """Decode wire bytes to an exchange record: ``deserializer(data, ctx) -> Exchange``.

    Reads single-object and Confluent framing alike. ``writers`` are the schemas single-object data
    may have been written with (default: every shipped version); ``reader`` is the shape returned
    (default: the current version). A registry, when given, resolves Confluent schema ids.
    Thread-safe.
    """

    def __init__(
        self,
        *,
        reader: WriterSchema | None = None,
        writers: Iterable[WriterSchema] | None = None,
        registry: SchemaRegistry | None = None,
    ) -> None:
        self.reader = reader or exchange_schema()
        if writers is None:
            writers = [exchange_schema(v) for v in known_versions()]
        self._by_fingerprint = {w.fingerprint: w for w in writers}
        self._by_fingerprint.setdefault(self.reader.fingerprint, self.reader)
        self._registry = registry
        self._by_id: dict[int, WriterSchema] = {}
        self._lock = threading.Lock()

    def add_writer(self, schema: WriterSchema) -> None:
        """Accept single-object data written with one more schema."""
        with self._lock:
            self._by_fingerprint[schema.fingerprint] = schema

    def __call__(self, data: bytes, ctx: TopicContext | None = None) -> Exchange:
        writer, start = self.framing(data)
        return self._read(data, start, writer)

    def decode_split(self, data: bytes, field: str) -> tuple[Exchange, WriterSchema, int, int | None]:
        """The record, the schema it was written with, where its Avro body starts in ``data``, and
        where the encoding of the top-level ``field`` starts (``None`` when the data was written
        with another schema than the reader's: its bytes do not line up with the reader's)."""
        writer, start = self.framing(data)
        if writer.fingerprint != self.reader.fingerprint:
            return self._read(data, start, writer), writer, start, None
        try:
            record, end, split = writer.split_decoder(field)(data, start)
        except _DECODE_ERRORS as exc:
            raise _decode_error(exc, data) from exc
        _check_end(data, end)
        return cast(Exchange, record), writer, start, split

    def framing(self, data: bytes) -> tuple[WriterSchema, int]:
        """The writer schema of framed data and the offset of its Avro body; DecodeError if unknown."""
        if not data:
            raise DecodeError("empty", "the message value is empty", data or b"")
        if data[:2] == SINGLE_OBJECT_MAGIC:
            if len(data) < _SINGLE_HEADER:
                raise DecodeError("truncated", "the single-object header is cut short", data)
            fingerprint = data[2:_SINGLE_HEADER]
            writer = self._by_fingerprint.get(fingerprint)
            if writer is None:
                raise DecodeError(
                    "unknown-fingerprint",
                    f"no known schema has fingerprint {fingerprint.hex()}; give the decoder the "
                    "writer's .avsc (TRAFFICREEL_SCHEMA_PATH) or use a Schema Registry",
                    data,
                )
            return writer, _SINGLE_HEADER
        if data[:1] == CONFLUENT_MAGIC:
            if len(data) < _CONFLUENT_HEADER:
                raise DecodeError("truncated", "the Confluent header is cut short", data)
            (schema_id,) = _SCHEMA_ID.unpack_from(data, 1)
            return self._writer_by_id(schema_id, data), _CONFLUENT_HEADER
        raise DecodeError(
            "bad-magic",
            f"starts with {data[:2].hex()}, neither Avro single-object (c301) nor Confluent (00) framing",
            data,
        )

    def _writer_by_id(self, schema_id: int, data: bytes) -> WriterSchema:
        writer = self._by_id.get(schema_id)
        if writer is not None:
            return writer
        if self._registry is None:
            raise DecodeError(
                "registry-required",
                f"Confluent-framed record (schema id {schema_id}) but no Schema Registry is configured; "
                "set TRAFFICREEL_SCHEMA_REGISTRY_URL",
                data,
            )
        text = self._registry.schema_text(schema_id)  # RegistryError propagates: transient, not bad data
        if text is None:
            raise DecodeError("unknown-schema-id", f"the registry has no schema id {schema_id}", data)
        try:
            writer = WriterSchema.from_json(text)
        except Exception as exc:
            raise DecodeError(
                "unknown-schema-id", f"schema id {schema_id} is not a usable Avro schema: {exc}", data
            ) from exc
        with self._lock:
            self._by_id[schema_id] = writer
        return writer

    def _read(self, data: bytes, start: int, writer: WriterSchema) -> Exchange:
        if writer.fingerprint == self.reader.fingerprint:
            try:
                record, end = writer.decoder(data, start)
            except _DECODE_ERRORS as exc:
                raise _decode_error(exc, data) from exc
        else:
            buf = io.BytesIO(data)
            buf.seek(start)
            try:
                record = schemaless_reader(buf, writer.parsed, self.reader.parsed)
            except EOFError as exc:
                raise DecodeError("truncated", f"the Avro body ends early: {exc}", data) from exc
            except Exception as exc:
                raise DecodeError(
                    "malformed", f"the Avro body is invalid: {type(exc).__name__}: {exc}", data
                ) from exc
            end = buf.tell()
        _check_end(data, end)
        return cast(Exchange, record)


def _decode_error(exc: Exception, data: bytes) -> DecodeError:
    if isinstance(exc, (IndexError, EOFError)):
        return DecodeError("truncated", f"the Avro body ends early: {exc}", data)
    return DecodeError("malformed", f"the Avro body is invalid: {type(exc).__name__}: {exc}", data)


def _check_end(data: bytes, end: int) -> None:
    rest = len(data) - end
    if rest:
        raise DecodeError("malformed", f"{rest} unexpected bytes after the Avro body", data)
