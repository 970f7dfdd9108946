"""Run the embedded ClickHouse HTTP endpoint: ``python -m trafficreel.stack.chdb_server``.

Prints one line ``LISTENING <host> <port>`` once it answers, then serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import FrameType

from ._chdb_http import ChdbEngine, make_handler

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trafficreel.stack.chdb_server",
        description="Serve a chDB data directory over ClickHouse's HTTP interface (loopback by default).",
    )
    parser.add_argument("--path", required=True, type=Path, help="chDB data directory (created if missing)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one (default)")
    args = parser.parse_args(argv)

    args.path.mkdir(parents=True, exist_ok=True)
    try:
        engine = ChdbEngine(str(args.path))
    except Exception as exc:  # noqa: BLE001 - chDB reports every start-up failure as RuntimeError
        print(
            f"ERROR cannot open the chDB data directory {args.path}: {exc}\n"
            "chDB allows one process per data directory: is another `trafficreel up` (or another "
            "embedded ClickHouse) using it? Stop it, or choose another TRAFFICREEL_DATA_DIR.",
            file=sys.stderr,
            flush=True,
        )
        return 2
    server = ThreadingHTTPServer((args.host, args.port), make_handler(engine))
    server.daemon_threads = True

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"LISTENING {args.host} {server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
