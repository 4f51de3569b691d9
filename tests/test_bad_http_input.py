"""Bad HTTP input is always a 4xx with a clear message, never a 500, on SQLite and PostgreSQL alike."""

import pytest

from inventory.models import StockItem
from inventory.services import stock_item_create
from orders.models import Order
from tests.helpers import pump

pytestmark = pytest.mark.django_db(transaction=True)

ORDERS = "/api/orders/"
ITEMS = "/api/inventory/items/"


@pytest.fixture
def stock():
    stock_item_create(sku="A-1", name="Apple", quantity=10)
    pump()


def post_raw(client, url: str, body: bytes):
    return client.generic("POST", url, body, content_type="application/json")


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 5_000 + b"]" * 5_000,  # 10 KB of nested arrays
        b'{"a":' * 3_000 + b"1" + b"}" * 3_000,
        b"{not json",
        b"\xff\xfe\x00garbage",
        b"",
    ],
    ids=["nested-arrays", "nested-objects", "malformed", "not-utf8", "empty"],
)
def test_an_unparseable_body_is_a_400(staff_api, body):
    for url in (ORDERS, ITEMS, f"{ITEMS}A-1/restock/", "/api/auth/token/"):
        response = post_raw(staff_api, url, body)
        assert response.status_code == 400, (url, response.content[:200])
        assert "detail" in response.json() or response.json()


@pytest.mark.parametrize("quantity", [10**30, 2**31, 2**62, 10**9 + 1, -1, 0, 1.5, "7", True, None])
def test_an_order_quantity_outside_1_to_a_billion_is_a_400(staff_api, stock, quantity):
    response = staff_api.post(
        ORDERS, {"customer_id": "c", "lines": [{"sku": "A-1", "quantity": quantity}]}, format="json"
    )
    assert response.status_code == 400
    assert "quantity" in str(response.json()["lines"])
    assert not Order.objects.exists()


def test_a_hundred_lines_of_the_largest_quantity_fit_every_column(staff_api):
    for n in range(100):
        stock_item_create(sku=f"S-{n}", name="s", quantity=1)
    pump()
    lines = [{"sku": f"S-{n}", "quantity": 10**9} for n in range(100)]
    response = staff_api.post(ORDERS, {"customer_id": "c", "lines": lines}, format="json")
    assert response.status_code == 202
    pump()
    view = staff_api.get(f"{ORDERS}{response.json()['id']}/").json()
    assert view["status"] == "REJECTED"  # not enough stock, but stored and summed without overflow
    listed = staff_api.get(f"{ORDERS}?customer_id=c").json()["results"][0]
    assert listed["total_quantity"] == 100 * 10**9


@pytest.mark.parametrize("quantity", [10**30, 2**31, 10**9 + 1])
def test_a_stock_quantity_over_a_billion_is_a_400(staff_api, stock, quantity):
    created = staff_api.post(ITEMS, {"sku": "B-1", "name": "b", "quantity": quantity}, format="json")
    restocked = staff_api.post(f"{ITEMS}A-1/restock/", {"quantity": quantity}, format="json")
    assert (created.status_code, restocked.status_code) == (400, 400)
    assert "quantity" in created.json() and "quantity" in restocked.json()
    assert StockItem.objects.get(sku="A-1").on_hand == 10


def test_restocking_past_a_billion_on_hand_is_a_400(staff_api, stock):
    assert staff_api.post(f"{ITEMS}A-1/restock/", {"quantity": 10**9 - 10}, format="json").status_code == 202
    response = staff_api.post(f"{ITEMS}A-1/restock/", {"quantity": 1}, format="json")
    assert response.status_code == 400
    assert StockItem.objects.get(sku="A-1").on_hand == 10**9


@pytest.mark.parametrize(
    "url",
    [
        f"{ITEMS}{'A' * 65}/",
        f"{ITEMS}{'A' * 10_000}/restock/",
        f"{ITEMS}-dash/",
        f"/api/timeline/{'c' * 129}/",
        "/api/timeline/a%00b/",  # a NUL byte failed PostgreSQL's lookup of the dead letters: a 500
        "/api/timeline/not%20a%20correlation%20id/",
        f"{ORDERS}{'1' * 300}/",
    ],
)
def test_an_over_long_or_malformed_path_parameter_is_a_json_404(staff_api, url):
    method = staff_api.post if url.endswith("restock/") else staff_api.get
    response = method(url, {"quantity": 1}, format="json")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}
