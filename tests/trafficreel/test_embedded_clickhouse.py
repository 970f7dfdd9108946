"""The embedded ClickHouse speaks ClickHouse's HTTP interface to clickhouse-connect and to plain HTTP."""

from __future__ import annotations

import datetime as dt
import glob
import gzip
import http.client
import json
import os
import socket
import tempfile
import time
import uuid
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest

from tests.conftest import Infra


def test_insert_and_select_through_clickhouse_connect(clickhouse: Any) -> None:
    """Rows inserted with clickhouse-connect (Native format) come back with the same values."""
    clickhouse.command(
        "CREATE TABLE ex (id UUID, ts DateTime64(6, 'UTC'), path String, "
        "headers Array(Tuple(name String, value String)), status Nullable(UInt16)) "
        "ENGINE = MergeTree ORDER BY (ts, id)"
    )
    rows = [
        [
            uuid.UUID(int=i),
            dt.datetime(2026, 11, 26, 12, 0, i, tzinfo=dt.UTC),
            f"/v1/orders/{i}",
            [("x-a", "1"), ("x-a", "2")],
            None if i % 5 == 0 else 200,
        ]
        for i in range(40)
    ]
    summary = clickhouse.insert("ex", rows, column_names=["id", "ts", "path", "headers", "status"])
    assert summary.written_rows == 40
    back = clickhouse.query("SELECT id, ts, path, headers, status FROM ex ORDER BY ts").result_rows
    # clickhouse-connect returns UTC times naive and named tuples as dicts.
    got = [
        [i, ts.replace(tzinfo=dt.UTC), p, [(h["name"], h["value"]) for h in hs], s]
        for i, ts, p, hs, s in back
    ]
    assert got == rows
    assert clickhouse.query(
        "SELECT count() FROM ex WHERE status IS NULL AND path LIKE {p:String}", parameters={"p": "/v1/%"}
    ).result_rows == [(8,)]


def test_binary_strings_survive(clickhouse: Any) -> None:
    """Bytes that are not UTF-8 are stored and returned exactly."""
    clickhouse.command("CREATE TABLE b (k UInt8, v String) ENGINE = MergeTree ORDER BY k")
    payload = bytes(range(256))
    clickhouse.insert("b", [[1, payload]], column_names=["k", "v"])
    result = clickhouse.query("SELECT v FROM b", query_formats={"String": "bytes"})
    assert result.result_rows == [(payload,)]


def test_errors_come_back_as_clickhouse_errors(clickhouse: Any) -> None:
    """A bad query raises clickhouse-connect's DatabaseError carrying ClickHouse's code."""
    from clickhouse_connect.driver.exceptions import DatabaseError

    with pytest.raises(DatabaseError, match="UNKNOWN_TABLE") as info:
        clickhouse.query("SELECT * FROM no_such_table")
    assert "Code: 60" in str(info.value)


def test_settings_apply_to_one_request_only(clickhouse: Any) -> None:
    """A setting sent with one query does not leak into the next one."""
    probe = "SELECT value FROM system.settings WHERE name = 'max_threads'"
    assert clickhouse.query(probe, settings={"max_threads": 3}).result_rows == [("3",)]
    assert clickhouse.query(probe).result_rows != [("3",)]


def _http(
    infra: Infra,
    method: str,
    params: dict[str, str],
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    url = urlsplit(infra.clickhouse_url)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=30)
    conn.request(method, "/?" + urlencode(params), body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, dict(resp.getheaders()), data


def test_plain_http_as_clickhouse_documents_it(infra: Infra) -> None:
    """GET ?query=, POST body queries, /ping, FORMAT clauses and param_ values work as on a server."""
    assert _http(infra, "GET", {"query": "SELECT 1 + 1"})[2] == b"2\n"
    assert _http(infra, "POST", {}, b"SELECT 'a' AS x FORMAT JSONEachRow")[2] == b'{"x":"a"}\n'
    status, headers, body = _http(infra, "POST", {"query": "SELECT {n:UInt8} * 2", "param_n": "21"})
    assert (status, body) == (200, b"42\n")
    assert headers["X-ClickHouse-Format"] == "TabSeparated"
    url = urlsplit(infra.clickhouse_url)
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
    conn.request("GET", "/ping")
    assert conn.getresponse().read() == b"Ok.\n"
    conn.close()


def test_http_errors_carry_status_code_header_and_text(infra: Infra) -> None:
    """Errors have ClickHouse's HTTP status, X-ClickHouse-Exception-Code and 'Code: N. DB::Exception' text."""
    status, headers, body = _http(infra, "GET", {"query": "SELECT * FROM nowhere.nothing"})
    assert status == 404
    assert headers["X-ClickHouse-Exception-Code"] in ("60", "81")
    assert body.startswith(b"Code: ")
    assert b"DB::Exception" in body
    status, headers, body = _http(infra, "GET", {"query": "SELEC 1"})
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (400, "62")
    status, headers, _ = _http(infra, "GET", {"query": "SELECT 1", "no_such_setting_xyz": "1"})
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (404, "115")


def _chunked(parts: list[bytes]) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


def test_insert_with_chunked_gzip_body(infra: Infra) -> None:
    """INSERT … FORMAT with a chunked, gzip-encoded body lands every row, as ClickHouse's docs show with curl."""
    table = f"default.chunked_{uuid.uuid4().hex[:8]}"
    assert (
        _http(
            infra,
            "POST",
            {"query": f"CREATE TABLE {table} (a UInt32, s String) ENGINE = MergeTree ORDER BY a"},
        )[0]
        == 200
    )
    rows = b"".join(b"%d\trow %d\n" % (i, i) for i in range(10_000))
    compressed = gzip.compress(rows)
    parts = [compressed[i : i + 7000] for i in range(0, len(compressed), 7000)]
    status, headers, body = _http(
        infra,
        "POST",
        {"query": f"INSERT INTO {table} FORMAT TabSeparated"},
        _chunked(parts),
        {"Transfer-Encoding": "chunked", "Content-Encoding": "gzip"},
    )
    assert status == 200, body
    assert json.loads(headers["X-ClickHouse-Summary"])["written_rows"] == "10000"
    assert _http(infra, "GET", {"query": f"SELECT count(), sum(a) FROM {table}"})[2] == b"10000\t49995000\n"
    # The statement may also open the body, with the data after its FORMAT clause.
    status, _, body = _http(infra, "POST", {}, f'INSERT INTO {table} FORMAT CSV\n10000,"x"\n'.encode())
    assert status == 200, body
    assert _http(infra, "GET", {"query": f"SELECT count() FROM {table}"})[2] == b"10001\n"
    _http(infra, "POST", {"query": f"DROP TABLE {table}"})


def test_rejected_insert_reports_the_parse_error(infra: Infra) -> None:
    """Rows ClickHouse cannot parse are rejected with a 4xx/5xx ClickHouse error, not silently dropped."""
    table = f"default.bad_{uuid.uuid4().hex[:8]}"
    _http(infra, "POST", {"query": f"CREATE TABLE {table} (a UInt32) ENGINE = MergeTree ORDER BY a"})
    status, headers, body = _http(
        infra, "POST", {"query": f"INSERT INTO {table} FORMAT TabSeparated"}, b"1\nnot-a-number\n"
    )
    assert status >= 400
    assert int(headers["X-ClickHouse-Exception-Code"]) > 0
    assert body.startswith(b"Code: ")
    _http(infra, "POST", {"query": f"DROP TABLE {table}"})


def test_insert_select_from_input_transforms_the_body(infra: Infra) -> None:
    """INSERT … SELECT … FROM input('structure') FORMAT X reads the body through the SELECT, as
    ClickHouse's input() table function does (URL and body forms, quotes inside the structure)."""
    table = f"default.input_{uuid.uuid4().hex[:8]}"
    _http(
        infra, "POST", {"query": f"CREATE TABLE {table} (a UInt32, s String) ENGINE = MergeTree ORDER BY a"}
    )
    statement = (
        f"INSERT INTO {table} SELECT x * 2, concat(y, '!') FROM input('x UInt32, y String') FORMAT CSV"
    )
    status, headers, body = _http(infra, "POST", {"query": statement}, b'1,"a"\n2,"it\'s"\n')
    assert status == 200, body
    assert json.loads(headers["X-ClickHouse-Summary"])["written_rows"] == "2"
    status, _, body = _http(infra, "POST", {}, f"{statement}\n3,c\n".encode())
    assert status == 200, body
    rows = _http(infra, "GET", {"query": f"SELECT a, s FROM {table} ORDER BY a"})[2]
    assert rows == b"2\ta!\n4\tit\\'s!\n6\tc!\n"
    status, headers, _ = _http(infra, "POST", {"query": statement}, b"not,a,row\n")
    assert status >= 400 and int(headers["X-ClickHouse-Exception-Code"]) > 0
    _http(infra, "POST", {"query": f"DROP TABLE {table}"})


def test_an_insert_body_is_staged_under_no_name(infra: Infra) -> None:
    """While an INSERT … FROM input() body is still arriving it is staged in a file that has no
    name, so a server killed meanwhile leaves nothing behind (in /dev/shm or the temp dir)."""
    table = f"default.staged_{uuid.uuid4().hex[:8]}"
    _http(infra, "POST", {"query": f"CREATE TABLE {table} (a UInt32) ENGINE = MergeTree ORDER BY a"})
    places = [p for p in ("/dev/shm", tempfile.gettempdir()) if os.path.isdir(p)]

    def staged() -> set[str]:
        return {name for p in places for name in glob.glob(os.path.join(p, "trafficreel-input-*"))}

    before = staged()
    statement = f"INSERT INTO {table} SELECT x FROM input('x UInt32') FORMAT CSV"
    url = urlsplit(infra.clickhouse_url)
    rows = b"1\n" * 200_000
    with socket.create_connection((url.hostname or "127.0.0.1", url.port or 80), timeout=30) as sock:
        sock.sendall(
            f"POST /?{urlencode({'query': statement})} HTTP/1.1\r\nHost: x\r\n"
            f"Content-Length: {2 * len(rows)}\r\n\r\n".encode()
            + rows
        )
        deadline = time.monotonic() + 5
        during: set[str] = set()
        while time.monotonic() < deadline and not during:
            during = staged() - before
            time.sleep(0.05)
    assert during == set()  # half the body is in: a named file would be visible by now
    assert _http(infra, "GET", {"query": f"SELECT count() FROM {table}"})[2] == b"0\n"
    _http(infra, "POST", {"query": f"DROP TABLE {table}"})
