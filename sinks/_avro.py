"""Records to ClickHouse as their own Avro bytes: ClickHouse parses them, Python only slices.

A batch is sent as an Avro object container whose schema is the exchange schema preceded by three
fields, ``kafka_topic``, ``kafka_partition`` and ``kafka_offset``. Avro encodes a record as its
fields one after another, so those three values followed by a record's wire body *are* a record of
the extended schema: the sink puts a few bytes in front of each message instead of decoding and
re-encoding it. Each record is its own container block, so a record whose bytes are cut short
cannot shift the reading of its neighbours (ClickHouse refuses the insert, and the sink finds
the record), and bytes after a record's end are ignored rather than read as its coordinates.

The statement is ``INSERT INTO exchanges (…) SELECT … FROM input('<structure>') FORMAT Avro``:
ClickHouse's ``input`` table function reads the body with the structure the schema maps to
(records as named tuples, unions with null as Nullable, enums as Enum8) and the SELECT flattens
it into the table's columns (``_rows.COLUMNS``).
"""

from __future__ import annotations

import copy
import io
from collections.abc import Iterable, Iterator
from typing import Any

import fastavro

from trafficreel.schemas import SINGLE_OBJECT_MAGIC, DecodeError, WriterSchema, _decoder
from trafficreel.schemas._encoder import _long  # Avro's zig-zag varint, shared with the encoder

from ._rows import COLUMNS

__all__ = ["AvroBatch", "AvroInsert", "Block", "clickhouse_structure", "read_id_and_start"]

Block = tuple[bytes, memoryview]  # a container block: its head, and a view of the record's Avro body
_CHUNK_BYTES = 1 << 20  # pieces of an insert's body as it is sent
_UNREADABLE = "the record's id and start time cannot be read: {}"

_COORDINATES = [
    {"name": "kafka_topic", "type": "string"},
    {"name": "kafka_partition", "type": "int"},
    {"name": "kafka_offset", "type": "long"},
]
_PRIMITIVES = {
    "string": "String",
    "bytes": "String",
    "int": "Int32",
    "long": "Int64",
    "float": "Float32",
    "double": "Float64",
    "boolean": "Bool",
}
_LOGICAL = {"uuid": "UUID", "timestamp-micros": "DateTime64(6)", "timestamp-millis": "DateTime64(3)"}


def _body(prefix: str) -> dict[str, str]:
    body = f"{prefix}.body"
    return {
        f"{prefix}_body_data": f"{body}.data",
        f"{prefix}_body_size": f"accurateCast({body}.size, 'UInt64')",
        f"{prefix}_body_sha256": f"{body}.sha256",
        f"{prefix}_body_content_type": f"{body}.content_type",
        f"{prefix}_body_content_encoding": f"{body}.content_encoding",
        f"{prefix}_body_declared_length": f"accurateCast({body}.declared_length, 'Nullable(UInt64)')",
        f"{prefix}_body_state": f"toString({body}.state)",
    }


# Table column -> expression over the Avro record (as ClickHouse's input() presents it). Numbers
# narrower or unsigned in the table are cast with accurateCast: a value out of range makes
# ClickHouse refuse the insert (the sink then dead-letters that record) instead of wrapping it.
_SELECT: dict[str, str] = {
    "id": "id",
    "start_time": "start_time",
    "duration_us": "accurateCast(duration_us, 'UInt64')",
    "direction": "toString(direction)",
    **{
        name: f"source.{name}"
        for name in (
            "service",
            "service_version",
            "pod",
            "namespace",
            "node",
            "container_id",
            "k8s_api_host",
            "recorder",
        )
    },
    **{name: f"peer.{name}" for name in ("remote_address", "local_address", "forwarded_for")},
    **{name: f"accurateCast(peer.{name}, 'Nullable(UInt16)')" for name in ("remote_port", "local_port")},
    **{name: f"request.{name}" for name in ("method", "scheme", "host", "path", "query", "http_version")},
    "request_headers": "request.headers",
    **_body("request"),
    "status": "accurateCast(response.status, 'Nullable(UInt16)')",
    "response_headers": "response.headers",
    "response_trailers": "response.trailers",
    **_body("response"),
    "outcome": "toString(outcome.kind)",
    "exception_type": "outcome.exception_type",
    "exception_message": "outcome.exception_message",
    "response_started": "outcome.response_started",
    "trace_id": "trace.trace_id",
    "span_id": "trace.span_id",
    "trace_sampled": "trace.sampled",
    "traffic_class": "coalesce(nullIf(traffic_class, ''), 'unclassified')",
    "class_rule": "ifNull(class_rule, '')",
    "route": "ifNull(route, '')",
    "sample_weight": "ifNull(sample_weight, 1.0)",
    "redactions": "redactions",
    "tags": "tags",
    "kafka_topic": "kafka_topic",
    "kafka_partition": "kafka_partition",
    "kafka_offset": "kafka_offset",
}


def clickhouse_structure(schema: dict[str, Any]) -> str:
    """The ClickHouse structure (``name Type, …``) a top-level Avro record schema reads as."""
    named: dict[str, str] = {}
    return ", ".join(f"{f['name']} {_type(f['type'], named)}" for f in schema["fields"])


def _type(node: Any, named: dict[str, str]) -> str:
    if isinstance(node, str):
        if node in _PRIMITIVES:
            return _PRIMITIVES[node]
        return named[node]  # a named type defined earlier (Avro requires define-before-use)
    if isinstance(node, list):
        branches = [b for b in node if b != "null"]
        if len(branches) != 1:
            raise ValueError(f"unions other than [null, T] have no ClickHouse column type: {node}")
        inner = _type(branches[0], named)
        return f"Nullable({inner})" if len(branches) < len(node) else inner
    kind = node["type"]
    if node.get("logicalType") in _LOGICAL:
        return _LOGICAL[node["logicalType"]]
    if kind == "record":
        result = "Tuple(" + ", ".join(f"{f['name']} {_type(f['type'], named)}" for f in node["fields"]) + ")"
    elif kind == "enum":
        symbols = ", ".join(f"'{s}' = {i}" for i, s in enumerate(node["symbols"]))
        result = f"Enum8({symbols})"
    elif kind == "fixed":
        result = f"FixedString({node['size']})"
    elif kind == "array":
        return f"Array({_type(node['items'], named)})"
    elif kind == "map":
        return f"Map(String, {_type(node['values'], named)})"
    else:
        return _type(kind, named)
    named[node["name"]] = result
    if "namespace" in node:
        named[f"{node['namespace']}.{node['name']}"] = result
    return result


def read_id_and_start(data: bytes, start: int) -> tuple[str, int]:
    """The record id and start time (µs) from the first two fields of an Avro body at ``start``."""
    try:
        length, pos = _decoder._long(data, start)
        if length < 0 or pos + length > len(data):
            raise ValueError("id length out of range")
        record_id = data[pos : pos + length].decode()
        start_time, _ = _decoder._long(data, pos + length)
    except (IndexError, ValueError) as exc:
        raise DecodeError("truncated", _UNREADABLE.format(exc), data) from exc
    return record_id, start_time


class AvroInsert:
    """The insert (its target: table, columns, SELECT over the input) and the container header for
    one writer schema (the current one)."""

    def __init__(self, schema: WriterSchema, table: str = "exchanges", *, native: bool | None = None) -> None:
        if [f["name"] for f in schema.json["fields"][:2]] != ["id", "start_time"]:
            raise ValueError("the exchange schema must start with id and start_time")
        extended = copy.deepcopy(schema.json)
        extended["fields"] = [*_COORDINATES, *extended["fields"]]
        header = io.BytesIO()
        fastavro.writer(header, fastavro.parse_schema(extended), [], codec="null")
        self.header = header.getvalue()
        self.sync = self.header[-16:]  # fastavro ends the header with the file's sync marker
        structure = clickhouse_structure(extended).replace("\\", "\\\\").replace("'", "\\'")
        select = ", ".join(_SELECT[column] for column in COLUMNS)
        # What follows INSERT INTO: the table, its columns and the SELECT over the input.
        self.target = f"{table} ({', '.join(COLUMNS)}) SELECT {select} FROM input('{structure}')"  # noqa: S608
        self.extended = extended  # the schema of the container: exchange + Kafka coordinates
        self._coordinates: dict[tuple[str, int], bytes] = {}  # encoded topic and partition
        self.framing = SINGLE_OBJECT_MAGIC + schema.fingerprint  # of records in this schema
        # The C version of read() (``_cavro.sink_block``), where the package was built with it.
        self._native = _decoder._c().sink_block if _decoder._native(native) else None

    def read(self, data: bytes, topic: str, partition: int, offset: int) -> tuple[str, int, Block] | None:
        """The id, start time and container block (``block``) of the record at
        ``topic``/``partition``/``offset``, read from its first bytes when it is framed with this
        insert's schema (single-object framing); None when it is not. DecodeError when its id or
        start time cannot be read."""
        prefix = self._coordinates.get((topic, partition)) or self._prefix(topic, partition)
        if self._native is not None and type(data) is bytes:  # the C code reads bytes only
            try:
                found: tuple[str, int, Block] | None = self._native(data, self.framing, prefix, offset)
            except (EOFError, ValueError) as exc:
                raise DecodeError("truncated", _UNREADABLE.format(exc), data) from exc
            return found
        start = len(self.framing)
        if data[:start] != self.framing:
            return None
        record_id, start_time = read_id_and_start(data, start)
        return record_id, start_time, self.block(data, start, topic, partition, offset)

    def block(self, data: bytes, start: int, topic: str, partition: int, offset: int) -> Block:
        """The container block of the record at ``topic``/``partition``/``offset`` whose Avro
        body is ``data[start:]``: its head (block count and size, coordinates) and a view of the
        record's own bytes, which are not copied until the insert's body is put together."""
        prefix = self._coordinates.get((topic, partition)) or self._prefix(topic, partition)
        body = memoryview(data)[start:]
        head = prefix + _long(offset)
        return b"\x02" + _long(len(head) + len(body)) + head, body

    def _prefix(self, topic: str, partition: int) -> bytes:
        """The encoded topic and partition, the coordinates' first two fields."""
        name = topic.encode()
        prefix = self._coordinates[(topic, partition)] = _long(len(name)) + name + _long(partition)
        return prefix

    def send(
        self, client: Any, payload: bytes | Iterable[bytes], settings: dict[str, Any] | None = None
    ) -> None:
        """Insert a container (``AvroBatch.payload()``, or its ``chunks()``) with a clickhouse-connect
        client.

        Sent as a raw insert: ``client.command`` with data decodes the whole payload as text to
        classify the statement (about 15 µs per record, more than ClickHouse takes to store it).
        Chunks stream as they are joined, the statement in the URL, so the body is never held
        whole (bytes get the statement put in front of them: one more copy)."""
        client.raw_insert(self.target, None, payload, settings=settings, fmt="Avro")


class AvroBatch:
    """Records ready to send, kept as Avro container blocks (their own bytes plus coordinates)."""

    def __init__(self, insert: AvroInsert) -> None:
        self._insert = insert
        self.blocks: list[Block] = []

    def __len__(self) -> int:
        return len(self.blocks)

    def add(self, data: bytes, start: int, topic: str, partition: int, offset: int) -> None:
        """Add the Avro body ``data[start:]`` of the record at ``topic``/``partition``/``offset``."""
        self.blocks.append(self._insert.block(data, start, topic, partition, offset))

    def subset(self, keep: list[int]) -> AvroBatch:
        """A batch of the records at the given positions."""
        out = AvroBatch(self._insert)
        out.blocks = [self.blocks[i] for i in keep]
        return out

    def payload(self) -> bytes:
        """The whole container, in one piece."""
        return b"".join(self.chunks(1 << 62))

    def chunks(self, size: int = _CHUNK_BYTES) -> Iterator[bytes]:
        """The container in pieces of about ``size`` bytes (a new iterator per insert attempt)."""
        sync = self._insert.sync
        parts: list[bytes | memoryview] = [self._insert.header]
        held = len(self._insert.header)
        for head, body in self.blocks:
            parts += (head, body, sync)
            held += len(head) + len(body) + 16
            if held >= size:
                yield b"".join(parts)
                parts, held = [], 0
        if parts:
            yield b"".join(parts)
