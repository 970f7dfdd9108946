"""Fixtures: a real Kafka-protocol broker and a real ClickHouse for the whole test session.

By default the embedded stack (Tansu broker, chDB over ClickHouse's HTTP interface) runs as child
processes. With TRAFFICREEL_TEST_BACKEND=containers and a Docker engine that answers, the official
Apache Kafka and ClickHouse images run through testcontainers instead; without an engine the
session says so once and uses the embedded stack.
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from trafficreel.topics import create_topics

BACKEND_ENV = "TRAFFICREEL_TEST_BACKEND"
KAFKA_IMAGE = "apache/kafka:3.9.1"
CLICKHOUSE_IMAGE = "clickhouse/clickhouse-server:25.8"


@dataclass
class Infra:
    """Endpoints of the broker and ClickHouse the tests talk to."""

    bootstrap: str
    clickhouse_url: str
    backend: str
    clickhouse_user: str = "default"
    clickhouse_password: str = ""
    embedded: Any = None  # the EmbeddedStack, for tests that freeze or inspect its processes

    def kafka_conf(self, **extra: Any) -> dict[str, Any]:
        return {"bootstrap.servers": self.bootstrap, **extra}


def _docker_answers() -> tuple[bool, str]:
    try:
        import docker

        docker.from_env(timeout=3).ping()
    except Exception as exc:  # noqa: BLE001 - any failure means: no engine to use
        return False, f"{type(exc).__name__}: {str(exc)[:120]}"
    return True, ""


def _container_infra() -> Iterator[Infra]:
    from testcontainers.clickhouse import ClickHouseContainer
    from testcontainers.kafka import KafkaContainer

    with KafkaContainer(KAFKA_IMAGE).with_kraft() as kafka, ClickHouseContainer(CLICKHOUSE_IMAGE) as ch:
        url = f"http://{ch.get_container_host_ip()}:{ch.get_exposed_port(8123)}"
        yield Infra(kafka.get_bootstrap_server(), url, "containers", ch.username, ch.password)


def _embedded_infra(data_dir: Path) -> Iterator[Infra]:
    from trafficreel.stack import EmbeddedStack

    with EmbeddedStack(data_dir=data_dir, partitions=3) as stack:
        yield Infra(stack.broker.bootstrap, stack.clickhouse.url, "embedded", embedded=stack)


@pytest.fixture(scope="session")
def infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Infra]:
    """The session's broker and ClickHouse, started once and stopped at the end."""
    if os.environ.get(BACKEND_ENV, "embedded") == "containers":
        ok, why = _docker_answers()
        if ok:
            yield from _container_infra()
            return
        print(
            f"\n[trafficreel tests] {BACKEND_ENV}=containers but no Docker engine answers ({why}); "
            "using the embedded broker and ClickHouse instead."
        )
    yield from _embedded_infra(tmp_path_factory.mktemp("stack"))


@pytest.fixture
def new_topic(infra: Infra) -> Callable[..., str]:
    """Create a fresh, uniquely named topic and return its name."""

    def make(partitions: int = 1) -> str:
        name = f"test.{uuid.uuid4().hex[:12]}"
        assert create_topics(infra.kafka_conf(), [name], partitions=partitions) == {name: "created"}
        return name

    return make


@pytest.fixture
def clickhouse(infra: Infra) -> Iterator[Any]:
    """A clickhouse-connect client of the session's ClickHouse, in a fresh database."""
    import clickhouse_connect

    host, _, port = infra.clickhouse_url.removeprefix("http://").partition(":")
    client = clickhouse_connect.get_client(
        host=host, port=int(port), username=infra.clickhouse_user, password=infra.clickhouse_password
    )
    database = f"t_{uuid.uuid4().hex[:10]}"
    client.command(f"CREATE DATABASE {database}")
    client.database = database
    try:
        yield client
    finally:
        client.command(f"DROP DATABASE IF EXISTS {database}")
        client.close()


def pytest_configure(config: pytest.Config) -> None:
    # clickhouse-connect and confluent-kafka are exercised for real; their own deprecations are
    # not ours to fail on, but ours are (filterwarnings = error in pyproject.toml).
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="testcontainers")
