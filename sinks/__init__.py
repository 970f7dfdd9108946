"""The ClickHouse sink: class topics into the ``exchanges`` table, each record exactly once."""

from ._migrations import MIGRATIONS, Migration, exchanges_ddl, migrate
from ._rows import COLUMNS
from ._sink import ClickHouseSink, SinkStats

__all__ = ["COLUMNS", "MIGRATIONS", "ClickHouseSink", "Migration", "SinkStats", "exchanges_ddl", "migrate"]
