"""Sinks: load classified exchanges into ClickHouse for SQL analysis."""

__all__: list[str] = []
