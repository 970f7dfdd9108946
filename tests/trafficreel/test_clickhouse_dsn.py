"""The ClickHouse DSN reaches a server over HTTP or chDB in-process through the same client API."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Infra
from trafficreel.clickhouse import connect
from trafficreel.config import Settings
from trafficreel.errors import ClickHouseError
from trafficreel.stack._processes import free_port


def test_http_dsn_reaches_the_embedded_server(infra: Infra) -> None:
    """An http:// DSN gives a clickhouse-connect client of the running ClickHouse."""
    client = connect(Settings(clickhouse_url=infra.clickhouse_url.replace("http://", "http://default:@")))
    assert client.query("SELECT 40 + 2").result_rows == [(42,)]
    client.close()


def test_chdb_dsn_runs_in_process(tmp_path: Path) -> None:
    """A chdb:/// DSN runs ClickHouse inside this process on its own data folder."""
    client = connect(Settings(clickhouse_url=f"chdb://{tmp_path}/ch"))
    client.command("CREATE TABLE t (a UInt8) ENGINE = MergeTree ORDER BY a")
    client.insert("t", [[1], [2]], column_names=["a"])
    assert client.query("SELECT sum(a) FROM t").result_rows == [(3,)]
    client.close()


def test_unreachable_server_says_what_to_do() -> None:
    """With nothing listening, connecting fails with the address (password masked) and what to check."""
    url = f"http://analyst:s3cret@127.0.0.1:{free_port()}"
    with pytest.raises(ClickHouseError) as info:
        connect(Settings(clickhouse_url=url), connect_timeout=2)
    assert "analyst:***@127.0.0.1" in str(info.value)
    assert "s3cret" not in str(info.value)
    assert "trafficreel up" in str(info.value)


def test_https_dsn_speaks_tls_whatever_the_port(infra: Infra) -> None:
    """An https:// DSN makes the client speak TLS, even on a port the driver would take for plain
    HTTP: pointed at a plain-HTTP server it fails its TLS handshake instead of talking in clear."""
    url = infra.clickhouse_url.replace("http://", "https://default:@")
    with pytest.raises(ClickHouseError, match=r"(?i)ssl|tls|wrong version"):
        connect(Settings(clickhouse_url=url))
