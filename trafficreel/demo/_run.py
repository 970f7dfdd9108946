"""``trafficreel demo``: the whole pipeline on one machine, in about two minutes.

Starts the embedded broker and ClickHouse, a stream worker and a sink, two recorded services
(orders: FastAPI under uvicorn; inventory: Flask under gunicorn) and a stub Kubernetes API server
that the services call through the real ``kubernetes`` client; drives a realistic mix of traffic;
prints the report; replays the recorded order lookups against a second build of orders (one
deliberate change) side by side with the first, and prints the comparison. Everything it started
is stopped at the end; the ClickHouse data stays, so ``trafficreel report`` and ``query`` go on
working.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from trafficreel.config import Settings
from trafficreel.errors import StackError
from trafficreel.stack import EmbeddedStack
from trafficreel.stack._processes import ChildProcess, free_port, wait_for_port

__all__ = ["DemoResult", "run_demo"]

ORDER_ROUTES = "route IN ('/v1/orders/{id}', '/v1/orders')"


@dataclass
class DemoResult:
    """What the demo did, for its caller and its test."""

    sent: Counter[str] = field(default_factory=Counter)
    rows: int = 0
    replay: dict[str, Any] = field(default_factory=dict)


def _python(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


class _Processes:
    """Children started by the demo, stopped in reverse order."""

    def __init__(self, logs: Path, env: dict[str, str]) -> None:
        self.logs, self.env = logs, env
        self.children: list[ChildProcess] = []

    def start(self, name: str, argv: list[str], port: int | None = None, **env: str) -> ChildProcess:
        child = ChildProcess(name, argv, self.logs / f"demo-{name}.log", {**self.env, **env})
        child.start()
        self.children.append(child)
        if port is not None:
            child.wait_ready(lambda: wait_for_port("127.0.0.1", port, time.monotonic() + 0.2), 60)
        return child

    def stop(self, child: ChildProcess) -> None:
        child.stop(timeout=20)
        if child in self.children:
            self.children.remove(child)

    def stop_all(self) -> None:
        for child in reversed(self.children):
            child.stop(timeout=20)
        self.children.clear()


_TOKEN = "Bearer demo-user-token-8f14e45fceea167a5a36dedd4bea2543"  # noqa: S105 - a planted demo secret


def _plan(rng: random.Random) -> tuple[str, str, str, dict[str, str], bytes | None]:
    """One request of the mix: (service, method, path, headers, body)."""
    roll = rng.random()
    ua = {"user-agent": "shop-frontend/3.2 (httpx)"}
    if roll < 0.34:
        order = rng.randint(1, 9400)  # some past 9000: 404
        return "orders", "GET", f"/v1/orders/{order}", {**ua, "authorization": _TOKEN}, None
    if roll < 0.42:
        return "orders", "GET", "/v1/orders?limit=60", {**ua, "accept-encoding": "gzip"}, None
    if roll < 0.52:
        item = rng.choice(["A-100", "B-200", "C-300"])
        body = f'{{"item": "{item}", "card": "4111 1111 1111 1111", "password": "hunter2"}}'
        if rng.random() < 0.15:
            body = '{"note": "no item"}'  # 422
        return "orders", "POST", "/v1/orders", {**ua, "content-type": "application/json"}, body.encode()
    if roll < 0.57:
        return "orders", "GET", "/v1/slow", ua, None
    if roll < 0.60:
        return "orders", "GET", "/v1/fail", ua, None
    if roll < 0.62:
        return "orders", "GET", "/v1/export", ua, None
    if roll < 0.71:
        sku = rng.choice(["A-100", "B-200", "Z-999"])
        return "inventory", "GET", f"/v1/stock/{sku}?token=s3cr3t-query-token", ua, None
    if roll < 0.75:
        data = rng.randbytes(48 * 1024)
        return "inventory", "POST", "/v1/uploads", {**ua, "content-type": "application/octet-stream"}, data
    if roll < 0.77:
        return "inventory", "GET", "/v1/stock/refresh", ua, None
    if roll < 0.96:
        return rng.choice(["orders", "inventory"]), "GET", "/healthz", {"user-agent": "kube-probe/1.31"}, None
    return "orders", "GET", "/metrics", {"user-agent": "Prometheus/2.53.0", "accept": "text/plain"}, None


async def _drive(urls: dict[str, str], seconds: float, rate: float, err: Console) -> Counter[str]:
    """Send the mix at ``rate`` requests/s for ``seconds``, with a progress bar."""
    import logging

    import httpx

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is too much here
    rng = random.Random(42)  # noqa: S311 - a repeatable traffic mix, not secrets
    total = int(seconds * rate)
    sent: Counter[str] = Counter()
    slots = asyncio.Semaphore(16)

    async with httpx.AsyncClient(timeout=30) as client:

        async def one(plan: tuple[str, str, str, dict[str, str], bytes | None]) -> None:
            service, method, path, headers, body = plan
            try:
                response = await client.request(method, urls[service] + path, headers=headers, content=body)
                await response.aread()
                sent[f"{service} {response.status_code // 100}xx"] += 1
            except httpx.HTTPError:
                sent[f"{service} failed"] += 1
            finally:
                slots.release()

        with Progress(
            TextColumn("traffic"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err
        ) as progress:
            task = progress.add_task("traffic", total=total)
            start = time.monotonic()
            tasks = []
            for i in range(total):
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await slots.acquire()
                tasks.append(asyncio.create_task(one(_plan(rng))))
                progress.update(task, completed=i + 1)
            await asyncio.gather(*tasks)
    return sent


def _wait_for_rows(client: Any, since_ms: int, at_least: int, err: Console, timeout: float = 120) -> int:
    """Wait until the sink has loaded at least ``at_least`` inbound rows and the count settles."""
    sql = f"SELECT count() FROM exchanges WHERE start_time >= fromUnixTimestamp64Milli({since_ms})"  # noqa: S608
    inbound = sql + " AND direction = 'INBOUND'"
    deadline = time.monotonic() + timeout
    last, steady = -1, 0
    with err.status("waiting for the stream worker and the sink to load everything ...") as status:
        while time.monotonic() < deadline:
            try:
                rows, arrived = client.query(sql).result_rows[0][0], client.query(inbound).result_rows[0][0]
            except Exception:  # noqa: BLE001 - the table appears when the sink has started
                rows, arrived = 0, 0
            status.update(f"waiting for the sink: {arrived}/{at_least} inbound requests loaded, {rows} rows")
            steady = steady + 1 if rows == last else 0
            if arrived >= at_least and steady >= 4:
                return int(rows)
            last = rows
            time.sleep(0.5)
    raise StackError(f"the sink loaded {last} rows, fewer than expected, within {timeout:.0f}s; see the logs")


def run_demo(settings: Settings, *, seconds: float, rate: float, out: Console, err: Console) -> DemoResult:
    """Run the demo; returns what it did. The caller prints nothing else."""
    import threading

    import clickhouse_connect

    from trafficreel._cli_sink import print_report
    from trafficreel.codec import deserializer
    from trafficreel.replay import Filters, KafkaSource, Pacing, ReplayConfig, Replayer, Summary, select_sql
    from trafficreel.sinks.report import build_report

    from .services import k8s_api_server

    result = DemoResult()
    data_dir = settings.data_dir
    logs = data_dir / "logs"
    stack = EmbeddedStack(data_dir=data_dir, partitions=3, topic_prefix=settings.topic_prefix)
    with err.status("starting the embedded broker and ClickHouse ..."):
        stack.start()
    k8s_port = free_port()
    k8s = k8s_api_server(k8s_port)
    threading.Thread(target=k8s.serve_forever, daemon=True).start()
    env = {
        **stack.env(),
        "TRAFFICREEL_HEALTH_PORT": "0",
        "TRAFFICREEL_LOG_FORMAT": "json",
        "PYTHONUNBUFFERED": "1",
    }
    procs = _Processes(logs, env)
    try:
        with err.status("starting the stream worker, the sink and the recorded services ..."):
            procs.start("stream", _python("trafficreel", "stream"))
            procs.start("sink", _python("trafficreel", "sink"))
            ports = {"orders": free_port(), "inventory": free_port()}
            urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
            pod_env = {
                "DEMO_K8S_API": f"http://127.0.0.1:{k8s_port}",
                "KUBERNETES_SERVICE_HOST": "127.0.0.1",
                "KUBERNETES_SERVICE_PORT": str(k8s_port),
                "POD_NAMESPACE": "shop",
                "NODE_NAME": "demo-node-1",
            }
            services = [
                procs.start(
                    "inventory",
                    _python("trafficreel.demo.services", "inventory", str(ports["inventory"])),
                    ports["inventory"],
                    **pod_env,
                    POD_NAME="inventory-5c9d8-x2kqp",
                ),
                procs.start(
                    "orders",
                    _python("trafficreel.demo.services", "orders", str(ports["orders"])),
                    ports["orders"],
                    **pod_env,
                    POD_NAME="orders-7f6b9-4xz2m",
                    DEMO_INVENTORY_URL=urls["inventory"],
                ),
            ]
        since_ms = int(time.time() * 1000) - 1000
        err.print(
            f"driving {int(seconds * rate)} requests over {seconds:.0f}s (orders, inventory, probes, scrapes)"
        )
        result.sent = asyncio.run(_drive(urls, seconds, rate, err))
        for child in services:  # their recorders flush on the way out
            procs.stop(child)
        client = clickhouse_connect.get_client(dsn=stack.clickhouse.url)
        inbound = sum(n for k, n in result.sent.items() if not k.endswith("failed"))
        result.rows = _wait_for_rows(client, since_ms, inbound, err)
        procs.stop_all()

        out.print()
        print_report(build_report(client, since_ms, None, 8), since_ms)

        err.print("replaying the recorded order lookups against orders v2, side by side with v1 ...")
        replay_ports = {"inventory": free_port(), "v1": free_port(), "v2": free_port()}
        quiet = {"TRAFFICREEL_ENABLED": "false"}
        procs.start(
            "replay-inventory",
            _python("trafficreel.demo.services", "inventory", str(replay_ports["inventory"])),
            replay_ports["inventory"],
            **quiet,
        )
        for build in ("v1", "v2"):
            procs.start(
                f"replay-orders-{build}",
                _python("trafficreel.demo.services", "orders", str(replay_ports[build]), "--build", build),
                replay_ports[build],
                **quiet,
                DEMO_INVENTORY_URL=f"http://127.0.0.1:{replay_ports['inventory']}",
            )
        conf = {**settings.kafka_client_config(), "bootstrap.servers": stack.broker.bootstrap}
        source = KafkaSource(conf, deserializer(settings))
        where = (
            f"service = 'orders' AND direction = 'INBOUND' AND {ORDER_ROUTES} "
            f"AND start_time >= fromUnixTimestamp64Milli({since_ms})"
        )
        selection = select_sql(source, client, where, Filters(), limit=400)
        source.close()
        config = ReplayConfig(
            target=f"http://127.0.0.1:{replay_ports['v2']}",
            baseline=f"http://127.0.0.1:{replay_ports['v1']}",
            allow=["127.0.0.1"],
            pacing=Pacing(mode="original", speed=5.0),
            learn_noise=True,
            concurrency=16,
        )
        summary = Summary()
        replayer = Replayer(config)

        async def replay() -> None:
            async for item in replayer.run(selection.records):
                summary.add(item, keep=False)

        with err.status(f"replaying {len(selection)} requests at 5x the recorded pace ..."):
            asyncio.run(replay())
        result.replay = summary.to_json(replayer.noise.to_json())
        from trafficreel._cli_replay import _print_summary

        out.print()
        out.print(
            "Replay of the order lookups: orders v2 (candidate) vs v1 (baseline), noise learned from v1 twice"
        )
        _print_summary(summary, result.replay)
    finally:
        procs.stop_all()
        k8s.shutdown()
        stack.stop()
    out.print()
    out.print(f"done; the ClickHouse data stays in {data_dir / 'clickhouse'}. Try:")
    out.print("  trafficreel report --since 1h")
    out.print(
        '  trafficreel query "SELECT traffic_class, route, count() FROM exchanges GROUP BY ALL ORDER BY 3 DESC"'  # noqa: E501
    )
    return result
