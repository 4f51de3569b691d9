"""The OpenAPI schema: valid, served to anyone, with its Swagger UI served from our own static files."""

import re
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.staticfiles import finders
from django.core.management import call_command
from rest_framework.test import APIClient

from tests.openapi.live_api import openapi_document

pytestmark = pytest.mark.django_db

OPERATIONS = {
    ("post", "/api/auth/token/"),
    ("get", "/api/events/"),
    ("get", "/api/inventory/items/"),
    ("post", "/api/inventory/items/"),
    ("get", "/api/inventory/items/{sku}/"),
    ("post", "/api/inventory/items/{sku}/restock/"),
    ("get", "/api/orders/"),
    ("post", "/api/orders/"),
    ("get", "/api/orders/{order_id}/"),
    ("post", "/api/orders/{order_id}/cancel/"),
    ("get", "/api/timeline/{correlation_id}/"),
}


def operations(document: dict) -> dict[tuple[str, str], dict]:
    return {(method, path): op for path, item in document["paths"].items() for method, op in item.items()}


def test_the_schema_validates_without_a_warning(tmp_path: Path):
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yml"))
    assert "openapi: 3.0.3" in (tmp_path / "schema.yml").read_text()


def test_the_schema_is_served_to_anyone_and_names_every_operation():
    response = APIClient().get("/api/schema/?format=json")
    assert response.status_code == 200
    assert set(operations(response.json())) == OPERATIONS


def test_every_operation_but_the_token_needs_a_token_or_a_session():
    document = openapi_document()
    assert document["components"]["securitySchemes"]["tokenAuth"]["in"] == "header"
    for key, operation in operations(document).items():
        anonymous = [{}] if key == ("post", "/api/auth/token/") else []
        assert operation["security"] == [{"tokenAuth": []}, {"cookieAuth": []}, *anonymous], key
        assert "401" in operation["responses"], key


def test_every_path_parameter_is_bounded():
    for (_method, path), operation in operations(openapi_document()).items():
        for parameter in operation.get("parameters", []):
            if parameter["in"] == "path":
                schema = parameter["schema"]
                assert schema.get("format") == "uuid" or re.fullmatch(r"\^.*\{\d+,\d+\}\$", schema["pattern"]), path


def test_the_docs_page_loads_swagger_ui_from_our_static_files():
    page = APIClient().get("/api/docs/").content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert assets and not re.findall(r"https?://", page)
    for asset in assets:
        assert asset.startswith(f"{settings.STATIC_URL}drf_spectacular_sidecar/"), asset
        assert finders.find(asset.removeprefix(settings.STATIC_URL)), asset


def test_a_throttled_view_documents_its_429(monkeypatch: pytest.MonkeyPatch):
    from core.throttling import SignInRateThrottle
    from orders.apis import OrderDetailApi

    monkeypatch.setattr(OrderDetailApi, "throttle_classes", [SignInRateThrottle])
    documented = operations(openapi_document())
    throttled = documented[("get", "/api/orders/{order_id}/")]["responses"]["429"]
    assert throttled["headers"]["Retry-After"]["schema"] == {"type": "integer"}
    assert "429" not in documented[("get", "/api/orders/")]["responses"]  # the write limit leaves reads alone
    assert "429" in documented[("post", "/api/orders/")]["responses"]
    assert "429" in documented[("post", "/api/auth/token/")]["responses"]
