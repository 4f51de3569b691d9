import uuid

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from inventory.services import stock_item_create
from orders.models import Order
from tests.helpers import pump

pytestmark = pytest.mark.django_db(transaction=True)

ORDERS = "/api/orders/"


@pytest.fixture
def stock():
    stock_item_create(sku="A-1", name="Apple", quantity=3)
    stock_item_create(sku="B-1", name="Banana", quantity=10)
    pump()  # the orders app learns the skus from STOCK_ADDED


def order_body(*lines: tuple[str, int], customer: str | None = None) -> dict:
    body: dict = {"lines": [{"sku": s, "quantity": q} for s, q in lines]}
    if customer is not None:
        body["customer_id"] = customer
    return body


def test_a_token_from_the_token_endpoint_authenticates():
    get_user_model().objects.create_user(username="bob", password="pw-bob-123")
    client = APIClient()
    assert client.get(ORDERS).status_code == 401
    token = client.post("/api/auth/token/", {"username": "bob", "password": "pw-bob-123"}, format="json").json()[
        "token"
    ]
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get(ORDERS).json()["count"] == 0  # bob's own orders


def test_placing_an_order_answers_202_and_the_order_then_confirms(api, stock):
    response = api.post(ORDERS, order_body(("A-1", 2), ("B-1", 1)), format="json")

    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "PENDING"
    assert body["correlation_id"] == response["X-Correlation-ID"]
    assert response["Location"].endswith(f"{ORDERS}{body['id']}/")

    pump()

    view = api.get(f"{ORDERS}{body['id']}/").json()
    assert view["status"] == "CONFIRMED"
    assert view["customer_id"] == "alice"
    assert view["lines"] == [{"sku": "A-1", "quantity": 2}, {"sku": "B-1", "quantity": 1}]
    assert [h["status"] for h in view["history"]] == ["PENDING", "CONFIRMED"]


def test_an_order_beyond_the_stock_is_rejected_with_the_reason(api, stock):
    order_id = api.post(ORDERS, order_body(("A-1", 5)), format="json").json()["id"]
    pump()
    view = api.get(f"{ORDERS}{order_id}/").json()
    assert view["status"] == "REJECTED"
    assert view["reason"] == "insufficient stock: A-1 short by 2"


def test_cancelling_releases_the_stock_and_a_second_cancel_conflicts(api, stock):
    order_id = api.post(ORDERS, order_body(("A-1", 3)), format="json").json()["id"]
    pump()

    assert api.post(f"{ORDERS}{order_id}/cancel/").status_code == 202
    pump()

    assert api.get(f"{ORDERS}{order_id}/").json()["status"] == "CANCELLED"
    assert api.get("/api/inventory/items/A-1/").json()["available"] == 3
    conflict = api.post(f"{ORDERS}{order_id}/cancel/")
    assert conflict.status_code == 409
    assert "CANCELLED" in conflict.json()["detail"]


def test_a_customers_orders_are_listed_newest_first_and_paginated(api, staff_api, stock):
    ids = [api.post(ORDERS, order_body(("B-1", 1)), format="json").json()["id"] for _ in range(3)]
    staff_api.post(ORDERS, order_body(("B-1", 1), customer="someone-else"), format="json")
    pump()

    page = api.get(f"{ORDERS}?page_size=2").json()
    assert page["count"] == 3
    assert [o["id"] for o in page["results"]] == ids[::-1][:2]
    assert page["next"]
    assert api.get(f"{ORDERS}?customer_id=alice").json()["count"] == 3  # naming oneself is allowed
    assert staff_api.get(f"{ORDERS}?customer_id=alice").json()["count"] == 3
    assert staff_api.get(ORDERS).status_code == 400  # staff name the customer


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"lines": [{"sku": "A-1", "quantity": 1}]}, "customer_id"),  # staff must name the customer
        ({"customer_id": "a", "lines": []}, "lines"),
        ({"customer_id": "a"}, "lines"),
        ({"customer_id": "a", "lines": [{"sku": "NOPE", "quantity": 1}]}, "lines"),
        ({"customer_id": "a", "lines": [{"sku": "A-1", "quantity": -1}]}, "lines"),
        ({"customer_id": "a", "lines": [{"sku": "A-1", "quantity": "1"}]}, "lines"),
        ({"customer_id": "a", "lines": [{"sku": "A-1"}]}, "lines"),
        ({"customer_id": "a", "lines": [{"sku": "A-1", "quantity": 1}] * 101}, "lines"),
        ({"customer_id": "a", "lines": [{"sku": "A-1", "quantity": 10**30}]}, "lines"),
        ({"customer_id": "a", "lines": [{"sku": "A-1", "quantity": 10**9 + 1}]}, "lines"),
        ({"customer_id": "a" * 65, "lines": [{"sku": "A-1", "quantity": 1}]}, "customer_id"),
    ],
)
def test_bad_orders_get_400_with_field_errors_and_nothing_is_written(staff_api, stock, body, field):
    response = staff_api.post(ORDERS, body, format="json")
    assert response.status_code == 400
    assert field in response.json()
    assert not Order.objects.exists()


def test_a_lines_errors_are_keyed_by_the_index_of_each_failing_line_whichever_rule_it_breaks(staff_api, stock):
    """The serializer's checks (the quantity's type and range) and the service's (the catalogue, a sku twice)
    answer in one shape: DRF's for a list, the failing lines by index."""
    lines = [{"sku": "A-1", "quantity": 1}, {"sku": "B-1", "quantity": 0}]
    assert staff_api.post(ORDERS, {"customer_id": "a", "lines": lines}, format="json").json() == {
        "lines": {"1": {"quantity": ["Must be a positive integer."]}}
    }
    lines = [{"sku": "A-1", "quantity": 1}, {"sku": "NOPE", "quantity": 1}, {"sku": "A-1", "quantity": 2}]
    assert staff_api.post(ORDERS, {"customer_id": "a", "lines": lines}, format="json").json() == {
        "lines": {"1": {"sku": ["Unknown sku 'NOPE'."]}, "2": {"sku": ["Sku 'A-1' appears on more than one line."]}}
    }


def test_one_answer_names_the_serializers_faults_and_the_catalogues_together(staff_api, stock):
    """A bad quantity on one line does not hide an unknown sku, or a sku twice, on others (or on the same line),
    nor does a bad customer id; a line whose sku is itself malformed is not looked up."""
    lines = [
        {"sku": "NOPE", "quantity": 0},
        {"sku": "A-1", "quantity": "1"},
        {"sku": " A-1 ", "quantity": 1},
        {"sku": "", "quantity": 1},
        "not a line",
        {"sku": "B-1", "quantity": 1},
    ]
    body = {"customer_id": "a" * 65, "lines": lines}
    assert staff_api.post(ORDERS, body, format="json").json() == {
        "customer_id": ["Ensure this field has no more than 64 characters."],
        "lines": {
            "0": {"sku": ["Unknown sku 'NOPE'."], "quantity": ["Must be a positive integer."]},
            "1": {"quantity": ["Must be a positive integer."]},
            "2": {"sku": ["Sku 'A-1' appears on more than one line."]},
            "3": {"sku": ["This field may not be blank."]},
            "4": {"non_field_errors": ["Invalid data. Expected a dictionary, but got str."]},
        },
    }
    # With no list of lines to check, the serializer's answer stands alone.
    assert staff_api.post(ORDERS, {"customer_id": "a" * 65, "lines": []}, format="json").json() == {
        "customer_id": ["Ensure this field has no more than 64 characters."],
        "lines": {"non_field_errors": ["This list may not be empty."]},
    }
    assert staff_api.post(ORDERS, [{"sku": "NOPE", "quantity": 0}], format="json").status_code == 400
    assert not Order.objects.exists()


def test_malformed_json_gets_400(api):
    response = api.generic("POST", ORDERS, "{not json", content_type="application/json")
    assert response.status_code == 400
    assert "Malformed JSON" in response.json()["detail"]


def test_unknown_orders_get_404(api):
    assert api.get(f"{ORDERS}{uuid.uuid4()}/").status_code == 404
    assert api.post(f"{ORDERS}{uuid.uuid4()}/cancel/").status_code == 404
    assert api.get(f"{ORDERS}not-a-uuid/").status_code == 404
