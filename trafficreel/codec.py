"""The record codec as the settings configure it: framing, Schema Registry and extra writer schemas."""

from __future__ import annotations

from pathlib import Path

from trafficreel.schemas import ConfluentRegistry, Deserializer, Serializer, WriterSchema

from .config import Settings

__all__ = ["deserializer", "serializer"]


def _registry(settings: Settings) -> ConfluentRegistry | None:
    if not settings.schema_registry_url:
        return None
    return ConfluentRegistry(settings.schema_registry_url, **settings.schema_registry_config)


def deserializer(settings: Settings) -> Deserializer:
    """A decoder for both framings; with a registry for Confluent ids, plus the extra .avsc writers."""
    decoder = Deserializer(registry=_registry(settings))
    for directory in settings.schema_path:
        for path in sorted(Path(directory).glob("*.avsc")):
            decoder.add_writer(WriterSchema.from_file(path))
    return decoder


def serializer(settings: Settings) -> Serializer:
    """An encoder writing Confluent framing when a registry is configured, single-object otherwise."""
    return Serializer(registry=_registry(settings), default_topic=settings.topic("raw"))
