import pytest
from rest_framework.test import APIClient

from inventory.models import StockItem
from tests.helpers import pump

pytestmark = pytest.mark.django_db(transaction=True)

ITEMS = "/api/inventory/items/"


def test_every_endpoint_requires_authentication():
    client = APIClient()
    assert client.get(ITEMS).status_code in (401, 403)
    assert client.post(ITEMS, {"sku": "A", "name": "n", "quantity": 1}, format="json").status_code in (401, 403)


def test_only_staff_may_add_or_restock_items(api):
    assert api.post(ITEMS, {"sku": "A", "name": "Apple", "quantity": 1}, format="json").status_code == 403
    assert api.post(f"{ITEMS}A/restock/", {"quantity": 1}, format="json").status_code == 403
    assert not StockItem.objects.exists()


def test_staff_add_and_restock_items_and_everyone_reads_the_stock_view(staff_api, api):
    created = staff_api.post(ITEMS, {"sku": "A-1", "name": "Apple", "quantity": 5}, format="json")
    assert created.status_code == 201
    assert created.json()["on_hand"] == 5
    restocked = staff_api.post(f"{ITEMS}A-1/restock/", {"quantity": 3}, format="json")
    assert restocked.status_code == 202

    pump()

    item = api.get(f"{ITEMS}A-1/").json()
    assert item == {"sku": "A-1", "name": "Apple", "on_hand": 8, "reserved": 0, "available": 8}
    listing = api.get(ITEMS).json()
    assert listing["count"] == 1
    assert listing["results"] == [item]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "n", "quantity": 1}, "sku"),
        ({"sku": "A", "quantity": 1}, "name"),
        ({"sku": "A", "name": "n", "quantity": 0}, "quantity"),
        ({"sku": "A", "name": "n", "quantity": "3"}, "quantity"),
        ({"sku": "A", "name": "n", "quantity": 2.5}, "quantity"),
        ({"sku": "has space", "name": "n", "quantity": 1}, "sku"),
    ],
)
def test_bad_items_get_400_with_field_errors(staff_api, body, field):
    response = staff_api.post(ITEMS, body, format="json")
    assert response.status_code == 400
    assert field in response.json()
    assert not StockItem.objects.exists()


def test_duplicate_skus_and_unknown_items_are_reported(staff_api, api):
    staff_api.post(ITEMS, {"sku": "A", "name": "Apple", "quantity": 1}, format="json")
    duplicate = staff_api.post(ITEMS, {"sku": "A", "name": "Apple", "quantity": 1}, format="json")
    assert duplicate.status_code == 400
    assert "already exists" in duplicate.json()["sku"][0]
    assert staff_api.post(f"{ITEMS}NOPE/restock/", {"quantity": 1}, format="json").status_code == 404
    assert api.get(f"{ITEMS}NOPE/").status_code == 404
