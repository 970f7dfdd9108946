"""The C decoder (``_cavro.c``): a schema's tree of tuples, made into a decoder once; and the
sink's reading of a record's id, start time and container block."""

from typing import Any

class Program:
    def __init__(self, tree: tuple[Any, ...], split: int = -1) -> None: ...
    def __call__(self, data: bytes, pos: int, /) -> tuple[Any, ...]: ...

def sink_block(
    data: bytes, framing: bytes, prefix: bytes, offset: int, /
) -> tuple[str, int, tuple[bytes, memoryview]] | None: ...
