"""A clickhouse-connect client from the configured DSN: a server over HTTP(S), or chDB in-process.

http://127.0.0.1:8123                      the embedded ClickHouse, or any server
https://user:password@host:8443/database   a ClickHouse server or ClickHouse Cloud
chdb:///path/to/data                       chDB inside this process (one process per folder)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from .config import Settings, mask_dsn
from .errors import ClickHouseError

__all__ = ["connect", "connect_or_embedded"]


def connect(settings: Settings, **options: Any) -> Any:
    """Return a clickhouse-connect client for ``settings.clickhouse_url``; options pass through."""
    try:
        import clickhouse_connect
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise ClickHouseError(
            "the ClickHouse client is not installed; run: pip install 'trafficreel[sink]'"
        ) from exc
    from clickhouse_connect.driver.exceptions import ClickHouseError as DriverError

    if urlsplit(settings.clickhouse_url).scheme == "https":
        options.setdefault("interface", "https")  # the driver takes TLS from the port, not the scheme
    try:
        return clickhouse_connect.get_client(dsn=settings.clickhouse_url, **options)
    except (DriverError, OSError) as exc:
        raise ClickHouseError(
            f"could not connect to ClickHouse at {mask_dsn(settings.clickhouse_url)}: {exc}; "
            "is it running (trafficreel up) and is TRAFFICREEL_CLICKHOUSE_URL right?"
        ) from exc


@contextlib.contextmanager
def connect_or_embedded(settings: Settings, **options: Any) -> Iterator[Any]:
    """A client of the configured ClickHouse; if that is a loopback address that does not answer
    and the data directory holds embedded ClickHouse data (``trafficreel demo`` or ``up`` ran
    before), the embedded ClickHouse is started on that data for as long as the block runs."""
    import logging

    logging.disable(logging.WARNING)  # a refused first try is expected here, not worth a warning
    try:
        client = connect(settings, **options)
    except ClickHouseError as exc:
        host = urlsplit(settings.clickhouse_url).hostname or ""
        data = settings.data_dir / "clickhouse"
        if host not in ("127.0.0.1", "localhost", "::1") or not data.is_dir():
            raise exc from None
        client = None
    finally:
        logging.disable(logging.NOTSET)
    if client is not None:
        yield client
        return
    from .logs import get_logger
    from .stack import EmbeddedClickHouse

    embedded = EmbeddedClickHouse(data, settings.data_dir / "logs")
    embedded.start()
    get_logger("trafficreel.clickhouse").info(
        "started the embedded ClickHouse for this command", data=str(data)
    )
    try:
        yield connect(settings.model_copy(update={"clickhouse_url": embedded.url}), **options)
    finally:
        embedded.stop()
