"""Normalised routes group paths with ids; user templates win over the heuristics."""

from __future__ import annotations

import pytest

from trafficreel.streams import RouteNormaliser, normalise_path


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/users/123/orders/9f1c2e7a-0b1d-4a55-9bbd-2c3a4e5f6a7b", "/users/{id}/orders/{uuid}"),
        ("/v1/orders", "/v1/orders"),
        ("/v2/items/0", "/v2/items/{id}"),
        ("/reports/2026-11-26", "/reports/{date}"),
        ("/reports/2026-11-26T10:00:00Z/csv", "/reports/{date}/csv"),
        ("/users/bob@example.com", "/users/{email}"),
        ("/users/bob%40example.com/cart", "/users/{email}/cart"),
        ("/blobs/5d41402abc4b2a76b9719d911017c592", "/blobs/{hex}"),
        ("/s/aGVsbG8gd29ybGQgdGhpcyBpczEy", "/s/{token}"),
        ("/", "/"),
        ("/static/app.min.js", "/static/app.min.js"),
        ("/api/v1/namespaces/default/pods", "/api/v1/namespaces/default/pods"),
        ("/deadbeef", "/deadbeef"),  # short hex words stay
    ],
)
def test_heuristics(path: str, route: str) -> None:
    """Integers, UUIDs, dates, e-mail addresses, long hex and base64-ish ids become placeholders."""
    assert normalise_path(path) == route


def test_templates_win_per_service() -> None:
    """A service's templates (then the "*" ones) are tried before the heuristics."""
    routes = RouteNormaliser(
        {"orders": ["/v1/orders/{order}/items/{item}", "/files/{path*}"], "*": ["/tenants/{tenant}"]}
    )
    assert routes.route("orders", b"/v1/orders/abc/items/7") == "/v1/orders/{order}/items/{item}"
    assert routes.route("orders", b"/files/a/b/c.txt") == "/files/{path*}"
    assert routes.route("users", b"/files/a/b/c.txt") == "/files/a/b/c.txt"
    assert routes.route("users", b"/tenants/acme") == "/tenants/{tenant}"
    assert routes.route("users", b"/v1/orders/abc/items/7") == "/v1/orders/abc/items/{id}"
