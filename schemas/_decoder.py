"""An Avro binary decoder compiled from a schema into straight-line Python (the encoder's twin).

fastavro's reader walks the schema for every value; for the exchange record (about 70 values)
that costs about 55 µs here, more than everything else the stream worker does to a record. The
compiled form reads the same bytes into the same dicts several times faster; a property test pins
that it returns what fastavro returns. It reads data written with the schema it was compiled from;
records written with another schema version go through fastavro's schema resolution instead.

``decode(data, pos) -> (value, end)``. Cut-short data raises ``IndexError`` or ``EOFError``;
malformed data ``ValueError``, ``struct.error`` or ``UnicodeDecodeError``. The codec turns them into
``DecodeError``.

Where the package was built with its C extension (``_cavro``, built by ``pip install`` wherever a
C compiler is at hand), the same schema is handed to it as a tree of tuples instead: it reads the
same bytes into the same values three to four times faster (5 against 17 µs for a 1 KiB record),
and decoding was half of the stream worker's time per record. Without it, the generated Python
runs; ``TRAFFICREEL_PURE_PYTHON=1`` forces that.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from types import ModuleType
from typing import Any

_cavro: ModuleType | None
try:
    from . import _cavro
except ImportError:  # built without a C compiler: the generated Python decoder does the work
    _cavro = None

__all__ = ["NATIVE", "Decoder", "SplitDecoder", "compile_decoder", "compile_split_decoder"]

NATIVE: bool = _cavro is not None and os.environ.get("TRAFFICREEL_PURE_PYTHON", "") in ("", "0")
"""Whether decoders are the C extension's (built, and not turned off by TRAFFICREEL_PURE_PYTHON)."""

Decoder = Callable[[bytes, int], tuple[Any, int]]
SplitDecoder = Callable[[bytes, int], tuple[Any, int, int]]

_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


def _long(data: bytes, pos: int) -> tuple[int, int]:
    """A zigzag varint that did not fit in one byte."""
    shift = 0
    n = 0
    while True:
        b = data[pos]
        pos += 1
        if shift == 63 and b & 0x7F > 1:
            raise ValueError("varint does not fit in 64 bits")
        n |= (b & 0x7F) << shift
        if b < 0x80:
            break
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")
    return (n >> 1) ^ -(n & 1), pos


def _length(data: bytes, pos: int) -> tuple[int, int]:
    """A length that did not fit in one byte, or a negative one (an error)."""
    b = data[pos]
    if b >= 128 and data[pos + 1] < 128:
        n, pos = (b & 0x7F) | (data[pos + 1] << 7), pos + 2
        n = (n >> 1) ^ -(n & 1)
    else:
        n, pos = _long(data, pos)
    if n < 0:
        raise ValueError(f"negative length {n}")
    return n, pos


def _short(end: int, size: int) -> None:
    raise EOFError(f"expected {end - size} more bytes")


class _Compiler:
    def __init__(self, split_at: str | None = None) -> None:
        self.split_at = split_at
        self.lines: list[str] = []
        self.consts: dict[str, Any] = {
            "_long": _long,
            "_short": _short,
            "_length": _length,
            "_unpack_d": struct.Struct("<d").unpack_from,
            "_unpack_f": struct.Struct("<f").unpack_from,
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

    def long(self, target: str, depth: int) -> None:
        b = self.var("b")
        self.emit(depth, f"{b} = data[pos]")
        self.emit(depth, f"if {b} < 128:")
        self.emit(depth + 1, f"{target} = ({b} >> 1) ^ -({b} & 1); pos += 1")
        # Lengths and sizes below 8 KiB take two bytes: read them here, not in a call.
        self.emit(depth, "elif data[pos + 1] < 128:")
        self.emit(depth + 1, f"{b} = ({b} & 127) | (data[pos + 1] << 7); pos += 2")
        self.emit(depth + 1, f"{target} = ({b} >> 1) ^ -({b} & 1)")
        self.emit(depth, "else:")
        self.emit(depth + 1, f"{target}, pos = _long(data, pos)")

    def length(self, target: str, depth: int) -> None:
        """``target`` = the next length: a long that must not be negative (odd once zigzagged)."""
        self.emit(depth, f"{target} = data[pos]")
        self.emit(depth, f"if {target} < 128 and not {target} & 1:")
        self.emit(depth + 1, f"{target} >>= 1; pos += 1")
        # Lengths below 8 KiB take two bytes: read them here, not in a call.
        self.emit(depth, f"elif {target} & 129 == 128 and data[pos + 1] < 128:")
        self.emit(depth + 1, f"{target} = ((({target} & 127) | (data[pos + 1] << 7))) >> 1; pos += 2")
        self.emit(depth, "else:")
        self.emit(depth + 1, f"{target}, pos = _length(data, pos)")

    def raw(self, target: str, depth: int) -> None:
        """``target`` = the next length-prefixed bytes.

        A slice past the end is cut short without a word; ``decode`` checks once, at the end,
        that no read went past the data (every read of a single byte raises IndexError there).
        """
        n = self.var("n")
        self.length(n, depth)
        self.emit(depth, f"{target} = data[pos:pos + {n}]")
        self.emit(depth, f"pos += {n}")

    def value(self, schema: Any, target: str, depth: int, namespace: str) -> None:
        """Emit code that reads one value of ``schema`` into the local ``target``."""
        schema = self.resolve(schema, namespace)
        if isinstance(schema, list):
            self.union(schema, target, depth, namespace)
            return
        kind = schema if isinstance(schema, str) else schema["type"]
        if kind == "null":
            self.emit(depth, f"{target} = None")
        elif kind == "boolean":
            b = self.var("b")
            self.emit(depth, f"{b} = data[pos]; pos += 1")
            self.emit(depth, f"if {b} > 1: raise ValueError('invalid boolean byte')")
            self.emit(depth, f"{target} = {b} == 1")
        elif kind in ("int", "long"):
            self.long(target, depth)
        elif kind == "double":
            self.emit(depth, f"{target}, = _unpack_d(data, pos); pos += 8")
        elif kind == "float":
            self.emit(depth, f"{target}, = _unpack_f(data, pos); pos += 4")
        elif kind == "bytes":
            self.raw(target, depth)
        elif kind == "string":
            self.raw(target, depth)
            self.emit(depth, f"{target} = {target}.decode()")
        elif kind == "record":
            ns = self.register(schema, namespace)
            names = []
            for field in schema["fields"]:
                if target == "record" and field["name"] == self.split_at:  # a field of the top record
                    self.emit(depth, "split = pos")
                v = self.var("v")
                self.value(field["type"], v, depth, ns)
                names.append(f"{field['name']!r}: {v}")
            self.emit(depth, f"{target} = {{{', '.join(names)}}}")
        elif kind == "enum":
            self.register(schema, namespace)
            table = self.var("symbols")
            self.consts[table] = tuple(schema["symbols"])
            i = self.var("i")
            # Any varint, as fastavro reads it (a writer may pad a small index to more bytes).
            self.long(i, depth)
            limit = len(schema["symbols"])
            self.emit(depth, f"if {i} < 0 or {i} >= {limit}: raise ValueError('enum index out of range')")
            self.emit(depth, f"{target} = {table}[{i}]")
        elif kind == "fixed":
            self.register(schema, namespace)
            size = int(schema["size"])
            self.emit(depth, f"{target} = data[pos:pos + {size}]")
            self.emit(depth, f"pos += {size}")
        elif kind in ("array", "map"):
            if kind == "array":
                _refuse_zero_width(schema["items"], self, namespace)
            count, item = self.var("c"), self.var("x")
            self.emit(depth, f"{target} = {'[]' if kind == 'array' else '{}'}")
            self.emit(depth, "while True:")
            self.long(count, depth + 1)
            self.emit(depth + 1, f"if {count} == 0: break")
            self.emit(depth + 1, f"if {count} < 0:")
            skip = self.var("s")
            self.long(skip, depth + 2)  # block size in bytes, not needed to read the block
            self.emit(depth + 2, f"{count} = -{count}")
            # Every item takes at least one byte here, so a count beyond the data is malformed
            # (and must not loop for ages).
            self.emit(
                depth + 1, f"if {count} > len(data) - pos: raise ValueError('block count beyond the data')"
            )
            self.emit(depth + 1, f"for _ in range({count}):")
            if kind == "array":
                self.value(schema["items"], item, depth + 2, namespace)
                self.emit(depth + 2, f"{target}.append({item})")
            else:
                key = self.var("k")
                self.value("string", key, depth + 2, namespace)
                self.value(schema["values"], item, depth + 2, namespace)
                self.emit(depth + 2, f"{target}[{key}] = {item}")
        else:
            raise ValueError(f"cannot compile Avro type {kind!r}")

    def null_index(self, branches: list[Any], namespace: str) -> int:
        """Where null is in a union of null and one other type (the only unions supported)."""
        resolved = [self.resolve(b, namespace) for b in branches]
        if len(branches) != 2 or "null" not in resolved:
            raise ValueError(f"only unions of null and one type are supported, not {branches}")
        return resolved.index("null")

    def union(self, branches: list[Any], target: str, depth: int, namespace: str) -> None:
        null_index = self.null_index(branches, namespace)
        # The branch index is 0 or 1: one byte, 0 or 2 once zigzag-encoded.
        i = self.var("u")
        self.emit(depth, f"{i} = data[pos]; pos += 1")
        self.emit(depth, f"if {i} == {2 * null_index}:")
        self.emit(depth + 1, f"{target} = None")
        self.emit(depth, f"elif {i} == {2 * (1 - null_index)}:")
        self.value(branches[1 - null_index], target, depth + 1, namespace)
        self.emit(depth, "else:")
        self.emit(depth + 1, f"raise ValueError('union branch byte ' + str({i}) + ' out of range')")


def _refuse_zero_width(items: Any, compiler: _Compiler, namespace: str) -> None:
    """Arrays whose items may take no bytes (null, an empty record, fixed(0)) are refused: a few
    bytes could claim billions of them, and no count check can tell a hostile block from a real one."""

    def zero(schema: Any, namespace: str) -> bool:
        schema = compiler.resolve(schema, namespace)
        if isinstance(schema, list):
            return False  # a union takes its branch index
        kind = schema if isinstance(schema, str) else schema["type"]
        if kind == "null":
            return True
        if kind == "fixed":
            return int(schema["size"]) == 0
        if kind == "record":
            return all(zero(f["type"], str(schema.get("namespace", namespace))) for f in schema["fields"])
        return False

    if zero(items, namespace):
        raise ValueError(f"cannot compile an array of items that may take no bytes: {items!r}")


def compile_decoder(schema: dict[str, Any], *, native: bool | None = None) -> Decoder:
    """Return ``decode(data, pos) -> (record, end)`` reading Avro binary written with ``schema``.

    ``native``: the C decoder (True), the generated Python (False), or the C one where built
    (None, the default)."""
    if _native(native):
        decode: Decoder = _c().Program(_tree(schema))
        return decode
    return _compile(schema, None)  # type: ignore[no-any-return]


def compile_split_decoder(schema: dict[str, Any], field: str, *, native: bool | None = None) -> SplitDecoder:
    """Return ``decode(data, pos) -> (record, end, split)``, ``split`` being where the encoding of
    the top-level record's ``field`` starts (the fields from there on are ``data[split:end]``)."""
    names = [f["name"] for f in schema.get("fields", ())]
    if field not in names:
        raise ValueError(f"the record has no field {field!r}")
    if _native(native):
        decode: SplitDecoder = _c().Program(_tree(schema), names.index(field))
        return decode
    return _compile(schema, field)  # type: ignore[no-any-return]


def _native(native: bool | None) -> bool:
    if native is None:
        return NATIVE
    if native:
        _c()  # says what to do when it was not built
    return native


def _c() -> Any:
    if _cavro is None:
        raise RuntimeError(
            "trafficreel was installed without its C extension (no C compiler at install time); "
            "install gcc and the Python headers, then reinstall it"
        )
    return _cavro


# Node kinds of the C decoder's tree (see _cavro.c).
_KINDS = {"null": 0, "boolean": 1, "int": 2, "long": 2, "float": 3, "double": 4, "bytes": 5, "string": 6}
_RECORD, _ENUM, _FIXED, _ARRAY, _MAP, _UNION = 7, 8, 9, 10, 11, 12


def _tree(schema: dict[str, Any]) -> tuple[Any, ...]:
    """The schema as the C decoder's tree of tuples, named types resolved as the compiler does."""
    compiler = _Compiler()

    def node(schema: Any, namespace: str) -> tuple[Any, ...]:
        schema = compiler.resolve(schema, namespace)
        if isinstance(schema, list):
            null_index = compiler.null_index(schema, namespace)
            return (_UNION, null_index, node(schema[1 - null_index], namespace))
        kind = schema if isinstance(schema, str) else schema["type"]
        if kind in _KINDS:
            return (_KINDS[kind],)
        if kind == "record":
            ns = compiler.register(schema, namespace)
            fields = schema["fields"]
            return (_RECORD, tuple(f["name"] for f in fields), tuple(node(f["type"], ns) for f in fields))
        if kind == "enum":
            compiler.register(schema, namespace)
            return (_ENUM, tuple(schema["symbols"]))
        if kind == "fixed":
            compiler.register(schema, namespace)
            return (_FIXED, int(schema["size"]))
        if kind == "array":
            _refuse_zero_width(schema["items"], compiler, namespace)
            return (_ARRAY, node(schema["items"], namespace))
        if kind == "map":
            return (_MAP, node(schema["values"], namespace))
        raise ValueError(f"cannot compile Avro type {kind!r}")

    return node(schema, schema.get("namespace", ""))


def _compile(schema: dict[str, Any], split_at: str | None) -> Any:
    compiler = _Compiler(split_at)
    compiler.value(schema, "record", 1, schema.get("namespace", ""))
    returned = "record, pos" if split_at is None else "record, pos, split"
    source = (
        "def decode(data, pos):\n"
        + "\n".join(compiler.lines)
        + f"\n    if pos > len(data): _short(pos, len(data))\n    return {returned}\n"
    )
    namespace: dict[str, Any] = dict(compiler.consts)
    exec(compile(source, f"<avro decoder {schema.get('name')}>", "exec"), namespace)  # noqa: S102 - our own generated code
    return namespace["decode"]
