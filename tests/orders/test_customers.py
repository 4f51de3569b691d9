"""Customers are users: each sees and acts on their own orders only; staff act for any customer."""

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from inventory.services import stock_item_create
from orders.models import Customer, Order
from orders.services import customer_of
from tests.helpers import pump

pytestmark = pytest.mark.django_db(transaction=True)

ORDERS = "/api/orders/"
LINES = [{"sku": "A-1", "quantity": 1}]


def client_for(username: str, *, is_staff: bool = False) -> APIClient:
    client = APIClient()
    client.force_authenticate(get_user_model().objects.create_user(username=username, is_staff=is_staff))
    return client


@pytest.fixture
def alices_order(api):
    stock_item_create(sku="A-1", name="Apple", quantity=10)
    pump()
    order_id = api.post(ORDERS, {"lines": LINES}, format="json").json()["id"]
    pump()
    return order_id


def test_an_order_belongs_to_the_customer_account_of_the_user_who_placed_it(api, alices_order):
    assert Order.objects.get(pk=alices_order).customer_id == "alice"
    assert api.get(f"{ORDERS}{alices_order}/").json()["customer_id"] == "alice"


def test_another_customer_gets_404_for_every_act_on_an_order_not_theirs(alices_order):
    bob = client_for("bob")

    assert bob.get(f"{ORDERS}{alices_order}/").status_code == 404
    assert bob.post(f"{ORDERS}{alices_order}/cancel/").status_code == 404
    assert bob.get(f"{ORDERS}?customer_id=alice").status_code == 404
    assert bob.post(ORDERS, {"customer_id": "alice", "lines": LINES}, format="json").status_code == 404
    assert bob.get(ORDERS).json()["count"] == 0
    assert Order.objects.get(pk=alices_order).status == Order.Status.CONFIRMED
    assert Order.objects.count() == 1


def test_staff_act_for_any_customer_by_naming_them(alices_order):
    staff = client_for("ops", is_staff=True)

    assert staff.get(f"{ORDERS}{alices_order}/").status_code == 200
    assert staff.get(f"{ORDERS}?customer_id=alice").json()["count"] == 1
    placed = staff.post(ORDERS, {"customer_id": "carol", "lines": LINES}, format="json")
    assert placed.status_code == 202
    assert Order.objects.get(pk=placed.json()["id"]).customer_id == "carol"
    assert staff.post(f"{ORDERS}{alices_order}/cancel/").status_code == 202


def test_the_event_log_and_timelines_are_staff_only(api, staff_api, alices_order):
    correlation_id = api.get(f"{ORDERS}{alices_order}/")["X-Correlation-ID"]
    order_events = f"/api/events/?aggregate_id={alices_order}"

    assert api.get(order_events).status_code == 403
    assert api.get(f"/api/timeline/{correlation_id}/").status_code == 403
    assert staff_api.get(order_events).json()["count"] >= 2


def test_a_customer_id_is_the_username_unless_it_is_taken_or_too_long(db):
    User = get_user_model()
    Customer.objects.create(user=User.objects.create_user(username="first"), customer_id="dave")

    assert customer_of(user=User.objects.create_user(username="erin")).customer_id == "erin"
    dave = User.objects.create_user(username="dave")
    assert customer_of(user=dave).customer_id == f"user-{dave.pk}"
    long_name = User.objects.create_user(username="x" * 100)
    assert customer_of(user=long_name).customer_id == f"user-{long_name.pk}"
    assert customer_of(user=dave).customer_id == f"user-{dave.pk}"  # stable once made
