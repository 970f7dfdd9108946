"""Codec: framed encode/decode of exchange records against bare fastavro on the same schema.

Encoding uses the schema's compiled encoder (byte-identical to fastavro, see schemas/_encoder.py);
target: at least 3x fastavro's schemaless writer, framing included. Decoding records of the
current schema uses the compiled decoder (schemas/_decoder.py; older writers go through fastavro's
schema resolution); target: at least 1.3x fastavro's schemaless reader, framing included.
"""

from __future__ import annotations

import io

from fastavro import schemaless_reader, schemaless_writer

from trafficreel.schemas import Deserializer, Serializer, exchange_schema, sample_exchange

from ._harness import Figure, median_rate

__all__ = ["run"]


def run(quick: bool) -> list[Figure]:
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
    enc, enc_base = median_rate(ours_encode, bare_encode, rounds)
    dec, dec_base = median_rate(ours_decode, bare_decode, rounds)
    sizes = sorted(len(e) for e in encoded)
    common = {"records": len(records), "rounds": rounds, "record_bytes_median": sizes[len(sizes) // 2]}
    return [
        Figure(
            "codec.encode_vs_fastavro",
            enc / enc_base,
            "ratio",
            target=3.0,
            detail={"candidate_per_s": round(enc), "baseline_per_s": round(enc_base), **common},
        ),
        Figure(
            "codec.decode_vs_fastavro",
            dec / dec_base,
            "ratio",
            target=1.3,
            detail={"candidate_per_s": round(dec), "baseline_per_s": round(dec_base), **common},
        ),
    ]
