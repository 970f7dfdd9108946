"""Records shaped for stream tests."""

from __future__ import annotations

import copy
from typing import Any

from trafficreel.schemas import Exchange, sample_exchange

TOPICS = {
    "business": "t.business",
    "k8s-api": "t.k8s-api",
    "probe": "t.probe",
    "scrape": "t.scrape",
}


def exchange(
    seed: int = 1,
    *,
    direction: str = "INBOUND",
    host: str | None = "orders.shop.svc.cluster.local",
    path: bytes = b"/v1/orders/12345",
    headers: dict[str, str] | None = None,
    status: int = 200,
    method: str = "GET",
    **changes: Any,
) -> Exchange:
    """A sample exchange with the fields classification looks at set as given."""
    record = copy.deepcopy(sample_exchange(seed))
    record["direction"] = direction  # type: ignore[typeddict-item]
    record["request"]["host"] = host
    record["request"]["path"] = path
    record["request"]["method"] = method
    record["response"]["status"] = status
    record["response"]["headers"] = [h for h in record["response"]["headers"] if h["name"] != b"set-cookie"]
    if headers is not None:
        record["request"]["headers"] = [{"name": k.encode(), "value": v.encode()} for k, v in headers.items()]
    for key, value in changes.items():
        record[key] = value  # type: ignore[literal-required]
    return record
