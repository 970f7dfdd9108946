"""An Avro binary encoder compiled from a schema into straight-line Python.

fastavro's writer picks each union branch by validating the value against every branch, which
costs about 80 µs per exchange record (about 30 nullable fields); the recorder's background thread
cannot afford that. This module turns a schema into one specialised function: a nullable field is a
None check, an enum a dict lookup, a record inlined — about ten times faster, and byte-for-byte
identical to fastavro's output (a property test pins that). Supports the Avro used by the project:
records, null/boolean/int/long/float/double/bytes/string, enums, fixed, arrays, maps and unions of
null with one other type. Fields with a default may be missing from the record.

Where the package's C extension is built, ``compile_encoder`` returns its ``Writer`` over this
encoder: records of plain builtin types (the recorder's and the stream worker's) are written in C,
the same bytes three times faster; anything else (a subclass, a missing field, a bad value) goes
to the generated Python, which writes it or raises. ``TRAFFICREEL_PURE_PYTHON=1`` turns it off.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from . import _decoder

__all__ = ["Encoder", "compile_encoder"]

Encoder = Callable[[Any, bytearray], None]

_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
_SMALL = 1 << 13  # non-negative ints below this (after zigzag) come from a table


def _varint(n: int) -> bytes:
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_TABLE = [_varint(i) for i in range(_SMALL)]


def _long(n: int) -> bytes:
    """Zigzag varint of a signed long, as Avro encodes int and long."""
    z = (n << 1) ^ (n >> 63)
    if 0 <= z < _SMALL:
        return _TABLE[z]
    if not -(1 << 63) <= n < (1 << 63):
        raise OverflowError(f"{n} does not fit in an Avro long")
    return _varint(z)


class _Compiler:
    def __init__(self, memo_fields: frozenset[str] = frozenset()) -> None:
        self.memo_fields = memo_fields
        self.lines: list[str] = []
        self.consts: dict[str, Any] = {
            "_long": _long,
            "_varint": _varint,
            "_T": _TABLE,
            "_pack_d": struct.Struct("<d").pack,
            "_pack_f": struct.Struct("<f").pack,
        }
        self.named: dict[str, Any] = {}
        self._n = 0

    def var(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}{self._n}"

    def emit(self, depth: int, line: str) -> None:
        self.lines.append("    " * depth + line)

    def resolve(self, schema: Any, namespace: str) -> Any:
        if isinstance(schema, str) and schema not in _PRIMITIVES:
            full = schema if "." in schema else f"{namespace}.{schema}" if namespace else schema
            return self.named.get(full) or self.named[schema]
        if isinstance(schema, dict) and schema.get("type") in _PRIMITIVES:
            return schema["type"]
        return schema

    def register(self, schema: dict[str, Any], namespace: str) -> str:
        name = schema["name"]
        ns = str(schema.get("namespace", namespace))
        full = name if "." in name else f"{ns}.{name}" if ns else name
        self.named[full] = schema
        self.named[name] = schema
        return ns

    def value(self, schema: Any, expr: str, depth: int, namespace: str) -> None:
        """Emit code that appends the encoding of ``expr`` (a plain name) under ``schema``."""
        schema = self.resolve(schema, namespace)
        if isinstance(schema, list):
            self.union(schema, expr, depth, namespace)
            return
        kind = schema if isinstance(schema, str) else schema["type"]
        if kind == "null":
            self.emit(depth, f"if {expr} is not None: raise TypeError('expected null')")
        elif kind == "boolean":
            self.emit(
                depth, f"out += b'\\x01' if {expr} is True else b'\\x00' if {expr} is False else _bad({expr})"
            )
        elif kind in ("int", "long"):
            # Inlined zigzag for the common small values; _long handles the rest and range checks.
            z = self.var("z")
            self.emit(depth, f"{z} = ({expr} << 1) ^ ({expr} >> 63)")
            self.emit(depth, f"out += _T[{z}] if 0 <= {z} < {_SMALL} else _long({expr})")
        elif kind == "double":
            self.emit(depth, f"out += _pack_d({expr})")
        elif kind == "float":
            self.emit(depth, f"out += _pack_f({expr})")
        elif kind == "bytes":
            self.length(f"len({expr})", depth)
            self.emit(depth, f"out += {expr}")
        elif kind == "string":
            b = self.var("b")
            self.emit(depth, f"{b} = {expr}.encode()")
            self.length(f"len({b})", depth)
            self.emit(depth, f"out += {b}")
        elif kind == "record":
            ns = self.register(schema, namespace)
            for field in schema["fields"]:
                v = self.var("v")
                if "default" in field:
                    # try/except costs nothing when the key is there (the usual case) since 3.11.
                    default = self.var("d")
                    self.consts[default] = field["default"]
                    self.emit(depth, f"try: {v} = {expr}[{field['name']!r}]")
                    self.emit(depth, f"except KeyError: {v} = {default}")
                else:
                    self.emit(depth, f"{v} = {expr}[{field['name']!r}]")
                if field["name"] in self.memo_fields and depth == 1:
                    self.memo(field["type"], v, depth, ns)
                else:
                    self.value(field["type"], v, depth, ns)
        elif kind == "enum":
            self.register(schema, namespace)
            table = self.var("enum")
            self.consts[table] = {s: _long(i) for i, s in enumerate(schema["symbols"])}
            self.emit(depth, f"out += {table}[{expr}]")
        elif kind == "fixed":
            self.register(schema, namespace)
            size = int(schema["size"])
            self.emit(depth, f"if len({expr}) != {size}: raise ValueError('fixed size is {size}')")
            self.emit(depth, f"out += {expr}")
        elif kind == "array":
            item = self.var("i")
            self.emit(depth, f"if {expr}:")
            self.emit(depth + 1, f"out += _long(len({expr}))")
            self.emit(depth + 1, f"for {item} in {expr}:")
            items = self.resolve(schema["items"], namespace)
            if isinstance(items, dict) and items.get("type") == "record":
                self.record_item(items, item, depth + 2, namespace)
            else:
                self.value(items, item, depth + 2, namespace)
            self.emit(depth, "out += b'\\x00'")
        elif kind == "map":
            key, val = self.var("k"), self.var("m")
            self.emit(depth, f"if {expr}:")
            self.emit(depth + 1, f"out += _long(len({expr}))")
            self.emit(depth + 1, f"for {key}, {val} in {expr}.items():")
            self.value("string", key, depth + 2, namespace)
            self.value(schema["values"], val, depth + 2, namespace)
            self.emit(depth, "out += b'\\x00'")
        else:
            raise ValueError(f"cannot compile Avro type {kind!r}")

    def record_item(self, schema: dict[str, Any], expr: str, depth: int, namespace: str) -> None:
        """An array item of record type: a dict, or a tuple or list of its fields in order (no copy
        needed for the ``(name, value)`` header pairs ASGI servers hand over)."""
        ns = self.register(schema, namespace)
        names = [self.var("f") for _ in schema["fields"]]
        self.emit(depth, f"if not isinstance({expr}, dict):")
        self.emit(depth + 1, f"({', '.join(names)}{',' if names else ''}) = {expr}")
        self.emit(depth, "else:")
        for name, field in zip(names, schema["fields"], strict=True):
            self.emit(depth + 1, f"{name} = {expr}[{field['name']!r}]")
        if not names:
            self.emit(depth + 1, "pass")  # a record of no fields takes no bytes
        for name, field in zip(names, schema["fields"], strict=True):
            self.value(field["type"], name, depth, ns)

    def memo(self, schema: Any, expr: str, depth: int, namespace: str) -> None:
        """Encode a sub-record once per distinct object: the recorder passes the same one each time."""
        memo = self.var("memo")
        # A sentinel no record holds: the first record is always encoded, even a wrong None.
        self.consts[memo] = [(object(), b"")]
        last = self.var("last")
        self.emit(depth, f"{last} = {memo}[0]")
        self.emit(depth, f"if {expr} is {last}[0]:")
        self.emit(depth + 1, f"out += {last}[1]")
        self.emit(depth, "else:")
        self.emit(depth + 1, "outer, out = out, bytearray()")
        self.value(schema, expr, depth + 1, namespace)
        # One tuple swap: a reader in another thread sees the old pair or the new one, never a mix.
        self.emit(depth + 1, f"{memo}[0] = ({expr}, bytes(out)); outer += out; out = outer")

    def length(self, expr: str, depth: int) -> None:
        n = self.var("n")
        self.emit(depth, f"{n} = {expr} << 1")
        self.emit(depth, f"out += _T[{n}] if {n} < {_SMALL} else _varint({n})")

    def union(self, branches: list[Any], expr: str, depth: int, namespace: str) -> None:
        resolved = [self.resolve(b, namespace) for b in branches]
        if len(branches) != 2 or "null" not in resolved:
            raise ValueError(f"only unions of null and one type are supported, not {branches}")
        null_index = resolved.index("null")
        other = branches[1 - null_index]
        self.emit(depth, f"if {expr} is None:")
        self.emit(depth + 1, f"out += {_long(null_index)!r}")
        self.emit(depth, "else:")
        self.emit(depth + 1, f"out += {_long(1 - null_index)!r}")
        self.value(other, expr, depth + 1, namespace)


def _bad(value: Any) -> bytes:
    raise TypeError(f"expected a boolean, got {type(value).__name__}")


def compile_encoder(
    schema: dict[str, Any], *, memo_fields: frozenset[str] = frozenset(), native: bool | None = None
) -> Encoder:
    """Return ``encode(record, out)`` appending the Avro binary encoding of ``record`` to ``out``.

    Top-level record fields named in ``memo_fields`` are encoded once per distinct object and reused
    while the same object comes again (by the Python encoder); such objects must not be mutated
    after first use. ``native``: the C fast path in front (True), the generated Python alone
    (False), or the C one where built (None).
    """
    compiler = _Compiler(memo_fields)
    compiler.value(schema, "record", 1, schema.get("namespace", ""))
    body = compiler.lines or ["    pass"]  # a record of no fields takes no bytes
    source = "def encode(record, out):\n" + "\n".join(body) + "\n"
    namespace: dict[str, Any] = {**compiler.consts, "_bad": _bad}
    exec(compile(source, f"<avro encoder {schema.get('name')}>", "exec"), namespace)  # noqa: S102 - our own generated code
    encode: Encoder = namespace["encode"]
    if not _decoder._native(native):
        return encode
    try:
        writer: Encoder = _decoder._c().Writer(_decoder._tree(schema), encode)
    except (TypeError, ValueError, KeyError):
        if native:
            raise
        return encode  # a schema the C tree cannot hold (enum symbols not str, say): Python's alone
    return writer
