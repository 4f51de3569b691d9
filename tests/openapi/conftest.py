"""A live server with known data for the contract tests: a staff user and a customer, each with a token,
stock the orders app knows about, and one order of the customer's, all projected into the read views."""

import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

from inventory.models import StockItem
from inventory.services import stock_item_create
from orders.models import Order
from orders.services import OrderLineIn, order_place
from tests.helpers import pump
from tests.openapi.live_api import ANONYMOUS, ROLES, Seed, Target


@pytest.fixture(autouse=True)
def no_rate_limits(settings):  # type: ignore[no-untyped-def]
    """The fuzzer sends over a thousand requests a minute per role: far past the write limit, whose 429s
    would hide the answers under test (tests/test_security.py checks the limits)."""
    rates = {"auth": "1000000/s", "write": "1000000/s"}
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}


@pytest.fixture(params=[*ROLES, ANONYMOUS])
def role(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def target(role: str, live_server, transactional_db) -> Target:  # type: ignore[no-untyped-def]
    users = get_user_model().objects
    staff = users.create_user(username="staff", password="pw-staff", is_staff=True)
    customer = users.create_user(username="alice", password="pw-alice")
    stock_item_create(sku="LAMP-1", name="Desk lamp", quantity=5)
    stock_item_create(sku="BULB-1", name="Bulb", quantity=100)
    pump()  # the stock view, and the orders app's catalogue of skus
    order = order_place(customer_id="alice", lines=[OrderLineIn(sku="LAMP-1", quantity=1)])
    pump()  # reserved, confirmed, and in alice's order view and listing
    seed = Seed(items=list(StockItem.objects.all()), order=Order.objects.get(pk=order.pk))
    user = {"staff": staff, "customer": customer}.get(role)
    token = Token.objects.create(user=user).key if user is not None else ""
    return Target(base_url=live_server.url, role=role, token=token, seed=seed)
