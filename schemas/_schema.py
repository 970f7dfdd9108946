"""The Avro schemas shipped in this package: loading, canonical form, fingerprints.

Each version of the record lives in ``exchange.vN.avsc`` beside this module; the highest version is
the one producers write. Schemas are parsed once per process and cached.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastavro import parse_schema
from fastavro.schema import fingerprint, to_parsing_canonical_form

from ._decoder import Decoder, SplitDecoder, compile_decoder, compile_split_decoder
from ._encoder import Encoder, compile_encoder

__all__ = [
    "CURRENT_VERSION",
    "SCHEMA_DIR",
    "WriterSchema",
    "exchange_schema",
    "exchange_schema_path",
    "known_versions",
]

SCHEMA_DIR = Path(__file__).resolve().parent
_FILE_RE = re.compile(r"^exchange\.v(\d+)\.avsc$")


def known_versions() -> list[int]:
    """Return the schema versions shipped in this package, oldest first."""
    found = (_FILE_RE.match(p.name) for p in SCHEMA_DIR.iterdir())
    return sorted(int(m.group(1)) for m in found if m)


CURRENT_VERSION = known_versions()[-1]


def exchange_schema_path(version: int = CURRENT_VERSION) -> Path:
    """Return the path of the ``.avsc`` file of one version of the exchange record."""
    return SCHEMA_DIR / f"exchange.v{version}.avsc"


def _strip_logical_types(node: Any) -> Any:
    # The binary encoding is the same with or without logical types; without them fastavro returns
    # plain ints and strings, which is cheaper and what the rest of the pipeline works with.
    if isinstance(node, dict):
        return {k: _strip_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_strip_logical_types(v) for v in node]
    return node


@dataclass(frozen=True)
class WriterSchema:
    """One Avro schema with everything the codec needs, computed once."""

    json: dict[str, Any]
    canonical_form: str
    fingerprint: bytes  # CRC-64-AVRO of the Parsing Canonical Form, 8 bytes little-endian
    parsed: Any  # fastavro's parsed form, logical types removed

    @classmethod
    def from_json(cls, schema: dict[str, Any] | str) -> WriterSchema:
        """Build from a schema as a JSON string or an already loaded dict."""
        raw: dict[str, Any] = json.loads(schema) if isinstance(schema, str) else schema
        canonical = to_parsing_canonical_form(raw)
        return cls(
            json=raw,
            canonical_form=canonical,
            fingerprint=bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO")),
            parsed=parse_schema(_strip_logical_types(raw)),
        )

    @classmethod
    def from_file(cls, path: Path) -> WriterSchema:
        """Build from an ``.avsc`` file."""
        return cls.from_json(json.loads(path.read_text(encoding="utf-8")))

    @functools.cached_property
    def encoder(self) -> Encoder:
        """The compiled binary encoder of this schema (see ``_encoder``); built on first use."""
        return compile_encoder(_strip_logical_types(self.json), memo_fields=frozenset({"source"}))

    @functools.cached_property
    def decoder(self) -> Decoder:
        """The compiled binary decoder of data written with this schema (see ``_decoder``)."""
        return compile_decoder(_strip_logical_types(self.json))

    def split_decoder(self, field: str) -> SplitDecoder:
        """The compiled decoder that also says where the top-level ``field`` starts; built once."""
        cache: dict[str, SplitDecoder] = self.__dict__.setdefault("_split_decoders", {})
        found = cache.get(field)
        if found is None:
            found = cache[field] = compile_split_decoder(_strip_logical_types(self.json), field)
        return found

    @property
    def text(self) -> str:
        """The schema as JSON text, as registered in a Schema Registry."""
        return json.dumps(self.json, separators=(",", ":"))


@functools.cache
def exchange_schema(version: int = CURRENT_VERSION) -> WriterSchema:
    """Return one shipped version of the exchange schema, parsed once per process."""
    path = exchange_schema_path(version)
    if not path.is_file():
        raise FileNotFoundError(f"no exchange schema v{version}; shipped versions: {known_versions()}")
    return WriterSchema.from_file(path)
