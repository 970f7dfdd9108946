"""Confluent Schema Registry access, behind one small interface.

Only used when a registry URL is configured; the import of confluent-kafka's registry client (and
its extra dependencies) happens here, lazily, so that apps recording with single-object framing
never load it. ``mock://`` URLs give an in-process registry, which the tests use.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

from .errors import RegistryError

__all__ = ["ConfluentRegistry", "SchemaRegistry"]


class SchemaRegistry(Protocol):
    """What the codec needs from a schema registry."""

    def register(self, subject: str, schema_text: str) -> int:
        """Register (or look up) an Avro schema under a subject and return its id."""
        ...

    def schema_text(self, schema_id: int) -> str | None:
        """Return the Avro schema text registered under an id, or None if there is no such id."""
        ...


class ConfluentRegistry:
    """A Confluent-compatible Schema Registry, through confluent-kafka's client (ids cached)."""

    def __init__(self, url: str, **conf: str) -> None:
        try:
            from confluent_kafka.schema_registry import SchemaRegistryClient
        except ImportError as exc:  # pragma: no cover - depends on the installed extras
            raise RegistryError(
                "a Schema Registry URL is configured but its client is not installed; "
                "run: pip install 'trafficreel[registry]'"
            ) from exc
        self.url = url
        self._client: Any = SchemaRegistryClient.new_client({"url": url, **conf})
        self._ids: dict[tuple[str, str], int] = {}
        self._texts: dict[int, str] = {}
        self._lock = threading.Lock()

    def register(self, subject: str, schema_text: str) -> int:
        key = (subject, schema_text)
        found = self._ids.get(key)
        if found is not None:
            return found
        from confluent_kafka.schema_registry import Schema

        try:
            schema_id = int(self._client.register_schema(subject, Schema(schema_text, "AVRO")))
        except Exception as exc:
            raise RegistryError(
                f"could not register the schema under subject {subject!r} at {self.url}: {exc}"
            ) from exc
        with self._lock:
            self._ids[key] = schema_id
            self._texts[schema_id] = schema_text
        return schema_id

    def schema_text(self, schema_id: int) -> str | None:
        found = self._texts.get(schema_id)
        if found is not None:
            return found
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            text = str(self._client.get_schema(schema_id).schema_str)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                return None
            raise RegistryError(f"could not fetch schema id {schema_id} from {self.url}: {exc}") from exc
        except Exception as exc:
            raise RegistryError(f"could not fetch schema id {schema_id} from {self.url}: {exc}") from exc
        with self._lock:
            self._texts[schema_id] = text
        return text
