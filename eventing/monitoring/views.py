"""Liveness, readiness and metrics over HTTP.

``/healthz`` and ``/readyz`` are, with login, the only endpoints that need no credentials: probes cannot
sign in. They reveal nothing but what is up. ``/metrics`` wants ``Authorization: Bearer $METRICS_TOKEN``
(what Prometheus sends with ``authorization: {credentials: …}``) or a staff user.
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST
from rest_framework.exceptions import AuthenticationFailed

from core.authentication import TokenAuthentication
from eventing.monitoring.metrics import exposition
from eventing.monitoring.readiness import readiness


@never_cache
@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    """Liveness: this process answers."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def readyz(request: HttpRequest) -> HttpResponse:
    """Readiness: 200 when the services answer and every consumer has a live process, else 503 and why."""
    ready, checks = readiness()
    return JsonResponse({"status": "ready" if ready else "not ready", "checks": checks}, status=200 if ready else 503)


def _may_scrape(request: HttpRequest) -> bool:
    header = request.headers.get("Authorization", "")
    token = settings.METRICS_TOKEN
    if token and header.startswith("Bearer "):
        return hmac.compare_digest(header.removeprefix("Bearer ").encode(), token.encode())
    if request.user.is_authenticated:
        return bool(request.user.is_staff)
    try:
        found = TokenAuthentication().authenticate(request)  # type: ignore[arg-type]  # reads only the header
    except AuthenticationFailed:
        return False
    return found is not None and bool(found[0].is_staff)


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    if not _may_scrape(request):
        response = HttpResponse("metrics need a bearer token (METRICS_TOKEN) or a staff user\n", status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)
