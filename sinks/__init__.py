"""The ClickHouse sink: class topics into the ``exchanges`` table, each record exactly once."""

from ._migrations import MIGRATIONS, Migration, exchanges_ddl
from ._rows import COLUMNS
from ._sink import ClickHouseSink, SinkStats, migrate

__all__ = ["COLUMNS", "MIGRATIONS", "ClickHouseSink", "Migration", "SinkStats", "exchanges_ddl", "migrate"]
