"""A clickhouse-connect client from the configured DSN: a server over HTTP(S), or chDB in-process.

http://127.0.0.1:8123                      the embedded ClickHouse, or any server
https://user:password@host:8443/database   a ClickHouse server or ClickHouse Cloud
chdb:///path/to/data                       chDB inside this process (one process per folder)
"""

from __future__ import annotations

from typing import Any

from .config import Settings, mask_dsn
from .errors import ClickHouseError

__all__ = ["connect"]


def connect(settings: Settings, **options: Any) -> Any:
    """Return a clickhouse-connect client for ``settings.clickhouse_url``; options pass through."""
    try:
        import clickhouse_connect
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise ClickHouseError(
            "the ClickHouse client is not installed; run: pip install 'trafficreel[sink]'"
        ) from exc
    from clickhouse_connect.driver.exceptions import ClickHouseError as DriverError

    try:
        return clickhouse_connect.get_client(dsn=settings.clickhouse_url, **options)
    except (DriverError, OSError) as exc:
        raise ClickHouseError(
            f"could not connect to ClickHouse at {mask_dsn(settings.clickhouse_url)}: {exc}; "
            "is it running (trafficreel up) and is TRAFFICREEL_CLICKHOUSE_URL right?"
        ) from exc
