"""A FastAPI service recorded by trafficreel: the example deployment.yaml runs it.

TrafficRecorder reads its settings from the environment (TRAFFICREEL_KAFKA_BOOTSTRAP,
TRAFFICREEL_SERVICE_NAME, ...) and where it runs from the Downward API (POD_NAME, POD_NAMESPACE,
NODE_NAME) and the service-account namespace file.
"""

from __future__ import annotations

from fastapi import FastAPI

from trafficreel.producers import TrafficRecorder

app = FastAPI(title="orders")
app.add_middleware(TrafficRecorder)


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/v1/orders/{order_id}")
def get_order(order_id: str) -> dict[str, str]:
    return {"id": order_id, "status": "SHIPPED"}


@app.post("/v1/orders")
def create_order(order: dict[str, object]) -> dict[str, object]:
    return {"id": "o-1", **order}
