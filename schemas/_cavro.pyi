"""The C decoder (``_cavro.c``): a schema's tree of tuples, made into a decoder once."""

from typing import Any

class Program:
    def __init__(self, tree: tuple[Any, ...], split: int = -1) -> None: ...
    def __call__(self, data: bytes, pos: int, /) -> tuple[Any, ...]: ...
