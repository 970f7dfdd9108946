"""Schema evolution: compatible older and newer writers are read, and every field is documented."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from trafficreel.schemas import (
    ConfluentRegistry,
    Deserializer,
    Serializer,
    WriterSchema,
    exchange_schema,
    known_versions,
    sample_exchange,
)


class _Topic:
    topic = "trafficreel.raw"


def _v2() -> WriterSchema:
    """v1 plus a field with a default: the only kind of change the project allows."""
    raw = copy.deepcopy(exchange_schema(1).json)
    raw["fields"].append(
        {
            "name": "cost_units",
            "type": ["null", "long"],
            "default": None,
            "doc": "A field added by a later version.",
        }
    )
    raw["fields"][4]["type"]["fields"].append(
        {"name": "zone", "type": "string", "default": "unknown", "doc": "Nested field added later."}
    )
    return WriterSchema.from_json(raw)


def test_v1_reader_reads_v2_data() -> None:
    """A v1 reader given v2's schema reads v2 records and drops the fields it does not know."""
    v2 = _v2()
    record: dict[str, Any] = dict(sample_exchange(10))
    record["cost_units"] = 7
    record["source"] = {**record["source"], "zone": "eu-1"}
    data = Serializer(schema=v2)(record)
    decoded = Deserializer(reader=exchange_schema(1), writers=[exchange_schema(1), v2])(data)
    assert decoded == sample_exchange(10)


def test_v2_reader_reads_v1_data_with_defaults() -> None:
    """A v2 reader reads v1 records and fills the new fields with their defaults."""
    v2 = _v2()
    data = Serializer(schema=exchange_schema(1))(sample_exchange(11))
    decoded: dict[str, Any] = dict(Deserializer(reader=v2, writers=[exchange_schema(1)])(data))
    assert decoded.pop("cost_units") is None
    assert decoded["source"].pop("zone") == "unknown"
    assert decoded == sample_exchange(11)


def test_newer_writer_through_the_registry() -> None:
    """With Confluent framing the v1 reader fetches the v2 writer schema by id and resolves it."""
    registry = ConfluentRegistry("mock://evolution")
    record: dict[str, Any] = dict(sample_exchange(12))
    record["cost_units"] = 1
    record["source"] = {**record["source"], "zone": "z"}
    data = Serializer(schema=_v2(), registry=registry)(record, _Topic())
    assert Deserializer(reader=exchange_schema(1), registry=registry)(data) == sample_exchange(12)


def test_unknown_newer_writer_is_rejected_with_a_hint() -> None:
    """Single-object data from an unknown writer names the fingerprint and how to supply the schema."""
    data = Serializer(schema=_v2())(dict(sample_exchange(13)) | {"cost_units": None})
    decoder = Deserializer(reader=exchange_schema(1), writers=[exchange_schema(1)])
    with pytest.raises(Exception, match="TRAFFICREEL_SCHEMA_PATH"):
        decoder(data)
    decoder.add_writer(_v2())
    assert decoder(data)["id"] == sample_exchange(13)["id"]


def _undocumented(node: Any, where: str) -> list[str]:
    missing: list[str] = []
    if isinstance(node, dict):
        if node.get("type") == "record":
            for field in node["fields"]:
                path = f"{where}.{field['name']}"
                if not str(field.get("doc", "")).strip():
                    missing.append(path)
                missing += _undocumented(field["type"], path)
        elif node.get("type") in ("array", "map"):
            missing += _undocumented(node.get("items", node.get("values")), where)
    elif isinstance(node, list):
        for branch in node:
            missing += _undocumented(branch, where)
    return missing


@pytest.mark.parametrize("version", known_versions())
def test_every_field_has_a_doc(version: int) -> None:
    """Every field at every depth of every shipped schema has a non-empty doc."""
    assert _undocumented(exchange_schema(version).json, "Exchange") == []
