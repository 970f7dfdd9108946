"""A minimal Django project in one module, for the integration tests (wsgi.py / asgi.py wrapping)."""

from __future__ import annotations

import django
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="tests-only",
        ROOT_URLCONF=__name__,
        ALLOWED_HOSTS=["*"],
        MIDDLEWARE=[],
        INSTALLED_APPS=[],
        USE_TZ=True,
    )
    django.setup()


def orders(request: HttpRequest, order_id: int) -> HttpResponse:
    return JsonResponse({"id": order_id, "got": len(request.body)}, headers={"X-Order": str(order_id)})


urlpatterns = [path("orders/<int:order_id>", orders)]
