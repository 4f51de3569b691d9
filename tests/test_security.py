"""Secure defaults: production settings pass Django's deploy checks, DEBUG is opt-in, passwords are
validated, sign-ins and writes are throttled, the demo data is a development convenience only, error pages
mask the services' URLs, and the admin cannot change bus state except through services."""

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.test import Client, RequestFactory
from django.views.debug import technical_500_response
from rest_framework.test import APIClient

from core.debug import SecretsFilter
from eventing.models import OutboxEvent, ProcessedEvent
from inventory.demo import OPERATORS
from inventory.models import StockItem
from inventory.services import stock_item_create
from orders.models import Order
from tests.helpers import pump

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION = {
    "DJANGO_SECRET_KEY": "k" + uuid.uuid4().hex + uuid.uuid4().hex,
    "DJANGO_ALLOWED_HOSTS": "shop.example.com",
    "DJANGO_CSRF_TRUSTED_ORIGINS": "https://shop.example.com",
    "DJANGO_SECURE_PROXY_SSL_HEADER": "HTTP_X_FORWARDED_PROTO,https",
    "DJANGO_SECURE_HSTS_SECONDS": "31536000",
    "DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS": "true",
    "DJANGO_SECURE_HSTS_PRELOAD": "true",
}


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**base, "DJANGO_SETTINGS_MODULE": "config.settings", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_production_settings_pass_the_deploy_check_at_warning_level():
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_debug_is_off_unless_asked_for_and_then_a_real_secret_key_is_required():
    result = manage("check", env={})
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set to a real secret when DJANGO_DEBUG is false" in result.stderr
    shown = manage(
        "shell", "--no-imports", "-c", "from django.conf import settings; print(settings.DEBUG)", env=PRODUCTION
    )
    assert shown.stdout.strip() == "False", shown.stderr


def test_without_debug_the_https_settings_default_to_secure():
    code = (
        "from django.conf import settings as s; print(s.SECURE_SSL_REDIRECT, s.SESSION_COOKIE_SECURE, "
        "s.CSRF_COOKIE_SECURE, s.SECURE_HSTS_SECONDS > 0, s.SECURE_PROXY_SSL_HEADER)"
    )
    minimal = {"DJANGO_SECRET_KEY": PRODUCTION["DJANGO_SECRET_KEY"]}
    assert manage("shell", "--no-imports", "-c", code, env=minimal).stdout.split() == [
        "True",
        "True",
        "True",
        "True",
        "None",
    ]
    proxied = manage("shell", "--no-imports", "-c", code, env=PRODUCTION).stdout
    assert "('HTTP_X_FORWARDED_PROTO', 'https')" in proxied


@pytest.mark.parametrize("password", ["short", "password1234", "123456789012"])
def test_weak_passwords_are_refused(password):
    with pytest.raises(ValidationError):
        validate_password(password)


@pytest.fixture
def throttle_rates(settings):
    """Low limits, counted under this test's own cache prefix."""
    settings.CACHES = {**settings.CACHES, "default": {**settings.CACHES["default"], "KEY_PREFIX": uuid.uuid4().hex}}
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"auth": "3/min", "write": "2/min"}}


@pytest.mark.django_db
def test_token_requests_are_throttled_per_address(throttle_rates):
    get_user_model().objects.create_user(username="bob", password="correct-horse-battery")
    client = APIClient()
    statuses = [
        client.post("/api/auth/token/", {"username": "bob", "password": "guess"}, format="json").status_code
        for _ in range(4)
    ]
    assert statuses == [400, 400, 400, 429]
    good = client.post("/api/auth/token/", {"username": "bob", "password": "correct-horse-battery"}, format="json")
    assert good.status_code == 429  # even the right password waits
    assert "Retry-After" in good


@pytest.mark.django_db(transaction=True)
def test_writes_are_throttled_per_user_and_reads_are_not(throttle_rates, staff_api, api):
    body = {"sku": "T-1", "name": "t", "quantity": 1}
    assert staff_api.post("/api/inventory/items/", body, format="json").status_code == 201
    assert staff_api.post("/api/inventory/items/T-1/restock/", {"quantity": 1}, format="json").status_code == 202
    throttled = staff_api.post("/api/inventory/items/T-1/restock/", {"quantity": 1}, format="json")
    assert throttled.status_code == 429
    assert StockItem.objects.get(sku="T-1").on_hand == 2
    assert all(staff_api.get("/api/inventory/items/").status_code == 200 for _ in range(5))
    assert api.post("/api/orders/", {"lines": [{"sku": "NOPE", "quantity": 1}]}, format="json").status_code == 400


@pytest.mark.django_db(transaction=True)
def test_the_write_limit_lets_requests_through_while_redis_is_down(settings, throttle_rates, staff_api):
    settings.CACHES = {
        **settings.CACHES,
        "default": {**settings.CACHES["default"], "LOCATION": "redis://127.0.0.1:1/0"},
    }
    statuses = [
        staff_api.post("/api/inventory/items/", {"sku": f"D-{n}", "name": "d", "quantity": 1}, format="json")
        for n in range(3)
    ]
    assert [response.status_code for response in statuses] == [201, 201, 201]


@pytest.mark.django_db
def test_the_demo_data_is_refused_outside_a_development_run(settings):
    settings.DEBUG = False
    with pytest.raises(CommandError, match="local development run"):
        call_command("seed_demo")
    assert not get_user_model().objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_demo_operator_is_staff_not_superuser_with_a_password_shown_once(settings, capsys):
    settings.DEBUG = True  # pytest-django runs tests without it
    call_command("seed_demo")
    first = capsys.readouterr().out
    password = re.search(r"demo operator \(staff\): demo / (\S+)", first).group(1)
    customer_password = re.search(r"demo customer: alice / (\S+)", first).group(1)

    demo = authenticate(username="demo", password=password)
    assert demo is not None and demo.is_staff and not demo.is_superuser
    assert demo.groups.filter(name=OPERATORS).exists()
    assert demo.has_perm("eventing.retry_deadletter") and not demo.has_perm("inventory.change_stockitem")
    assert authenticate(username="alice", password=customer_password).is_staff is False
    assert password != "demo-password"

    call_command("seed_demo")
    again = capsys.readouterr().out
    assert password not in again and "already exists (password unchanged)" in again


@pytest.mark.django_db(transaction=True)
def test_the_demo_password_can_come_from_the_environment(settings, capsys):
    settings.DEBUG = True
    settings.DEMO_PASSWORD = "a-long-chosen-passphrase"
    call_command("seed_demo")
    assert authenticate(username="demo", password="a-long-chosen-passphrase") is not None
    with pytest.raises(CommandError, match="password for bob"):
        call_command("seed_demo", "--username", "bob", "--password", "short")


def error_page(request) -> str:
    """Django's debug page for an error raised here (a frame that holds no secret of its own)."""
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        return technical_500_response(request, *sys.exc_info()).content.decode()


def test_error_pages_mask_the_service_urls_in_settings_and_in_the_request_environment(settings):
    secret = "pw-" + uuid.uuid4().hex
    settings.REDIS_URL = f"redis://bus:{secret}@redis.internal:6379/0"
    settings.MONGODB_URI = f"mongodb://app:{secret}@mongo.internal/eventmono"
    settings.DEBUG = True
    page = error_page(RequestFactory().get("/boom", DATABASE_URL=f"postgres://app:{secret}@db/eventmono"))

    assert "boom" in page and "REDIS_URL" in page and "DATABASE_URL" in page
    assert secret not in page
    safe = SecretsFilter().get_safe_settings()
    assert set(safe["REDIS_URL"]) == {"*"} and set(safe["MONGODB_URI"]) == {"*"}


@pytest.fixture
def operator(db) -> Client:
    """A superuser: even with every permission, bus state is read-only in the admin."""
    client = Client()
    client.force_login(get_user_model().objects.create_superuser(username="root", password="pw-root"))
    return client


@pytest.mark.django_db(transaction=True)
def test_the_admin_cannot_add_change_or_delete_bus_state(operator):
    item = stock_item_create(sku="RO-1", name="Read only", quantity=5)
    pump()
    outbox, inbox = OutboxEvent.objects.first(), ProcessedEvent.objects.first()
    pages = {
        "inventory/stockitem": item.pk,
        "inventory/reservation": None,
        "orders/order": None,
        "orders/catalogitem": "RO-1",
        "eventing/outboxevent": outbox.pk,
        "eventing/processedevent": inbox.pk,
    }
    for model, pk in pages.items():
        assert operator.get(f"/admin/{model}/").status_code == 200, model
        assert operator.get(f"/admin/{model}/add/").status_code == 403, model
        if pk is not None:
            page = operator.get(f"/admin/{model}/{pk}/change/")
            assert page.status_code == 200 and 'name="_save"' not in page.content.decode(), model
            assert operator.post(f"/admin/{model}/{pk}/change/", {"name": "edited"}).status_code == 403, model
            assert operator.post(f"/admin/{model}/{pk}/delete/", {"post": "yes"}).status_code == 403, model
    assert StockItem.objects.get(sku="RO-1").name == "Read only"


@pytest.mark.django_db(transaction=True)
def test_the_admins_cancel_action_calls_the_service_and_emits_the_event(operator, staff_api):
    stock_item_create(sku="C-1", name="c", quantity=5)
    pump()
    order_id = staff_api.post(
        "/api/orders/", {"customer_id": "c", "lines": [{"sku": "C-1", "quantity": 1}]}, format="json"
    ).json()["id"]
    pump()

    operator.post("/admin/orders/order/", {"action": "cancel_orders", "_selected_action": [order_id]})

    assert Order.objects.get(pk=order_id).status == Order.Status.CANCELLED
    assert OutboxEvent.objects.filter(event_type="ORDER_CANCELLED").count() == 1
    pump()
    assert StockItem.objects.get(sku="C-1").reserved == 0
