"""Codec: framed encode/decode of exchange records against bare fastavro on the same schema.

Encoding uses the schema's compiled encoder (byte-identical to fastavro, see schemas/_encoder.py);
target: at least 3x fastavro's schemaless writer, framing included. Decoding uses fastavro; target:
the framing (header, fingerprint lookup, checks) costs at most 10% of fastavro's own reader.
"""

from __future__ import annotations

import io
from typing import Any

from fastavro import schemaless_reader, schemaless_writer

from trafficreel.schemas import Deserializer, Serializer, exchange_schema, sample_exchange

from ._harness import Comparison, compare

__all__ = ["run"]


def run(quick: bool) -> tuple[list[Comparison], dict[str, Any]]:
    records = [sample_exchange(i, body_size=512) for i in range(2_000 if quick else 20_000)]
    schema = exchange_schema().parsed
    serializer, deserializer = Serializer(), Deserializer()
    encoded = [serializer(r) for r in records]
    bodies = [e[10:] for e in encoded]

    def ours_encode() -> int:
        for r in records:
            serializer(r)
        return len(records)

    def bare_encode() -> int:
        for r in records:
            out = io.BytesIO()
            schemaless_writer(out, schema, r)
            out.getvalue()
        return len(records)

    def ours_decode() -> int:
        for e in encoded:
            deserializer(e)
        return len(encoded)

    def bare_decode() -> int:
        for b in bodies:
            schemaless_reader(io.BytesIO(b), schema, None)
        return len(bodies)

    rounds = 3 if quick else 7
    results = [
        compare("codec.encode", "records", ours_encode, bare_encode, rounds=rounds, target=3.0),
        compare("codec.decode", "records", ours_decode, bare_decode, rounds=rounds, target=0.9),
    ]
    sizes = sorted(len(e) for e in encoded)
    extra = {"record_bytes_median": sizes[len(sizes) // 2], "records": len(records), "rounds": rounds}
    return results, extra
