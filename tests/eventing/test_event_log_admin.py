"""The event log in the admin: a read-only, filterable, paginated list of the MongoDB log and one event's page."""

import html
import json

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client, RequestFactory
from django.urls import reverse

from eventing.contract.envelope import Envelope
from eventing.models import EventLogEntry
from eventing.readside.event_index import event_index
from eventing.readside.event_log import EventRecord, event_log_append
from inventory.events import StockAdded
from inventory.services import stock_item_create
from tests.eventing.conftest import staff_client
from tests.helpers import pump

pytestmark = pytest.mark.django_db(transaction=True)


def event_index_append(envelope: Envelope) -> None:
    """Log the event and index it, as the projections consumer does."""
    event_log_append(envelope=envelope)
    event_index.apply(None, envelope)


CHANGELIST = "admin:eventing_eventlogentry_changelist"
ORDERS = "/api/orders/"


def detail_url(event_id: str) -> str:
    return reverse("admin:eventing_eventlogentry_change", args=[event_id])


@pytest.fixture
def orders(staff_api) -> list[dict]:
    """Two orders placed through the API by alice and bob, confirmed by the real consumers."""
    stock_item_create(sku="A-1", name="Apple", quantity=10)
    pump()
    placed = []
    for customer in ("alice", "bob"):
        body = {"customer_id": customer, "lines": [{"sku": "A-1", "quantity": 1}]}
        response = staff_api.post(ORDERS, body, format="json")
        assert response.status_code == 202
        placed.append(response.json())
    pump()
    return placed


def listed(client: Client, **params: str) -> list[dict]:
    response = client.get(reverse(CHANGELIST), params)
    assert response.status_code == 200
    return [row["record"] for row in response.context["rows"]]


def test_filtering_by_correlation_id_lists_one_transactions_events_in_order(console, orders):
    alice = orders[0]

    records = listed(console, correlation_id=alice["correlation_id"], order="oldest")

    assert [r["type"] for r in records] == ["ORDER_CREATED", "STOCK_RESERVED", "ORDER_CONFIRMED"]
    assert {r["aggregate_id"] for r in records} == {alice["id"]}
    newest_first = listed(console, correlation_id=alice["correlation_id"], order="newest")
    assert [r["type"] for r in newest_first] == ["ORDER_CONFIRMED", "STOCK_RESERVED", "ORDER_CREATED"]


def test_filtering_by_type_narrows_a_transactions_events_newest_first_by_default(console, orders):
    records = listed(console, correlation_id=orders[1]["correlation_id"], type="ORDER_CREATED")

    assert [r["aggregate_id"] for r in records] == [orders[1]["id"]]
    assert all(r["type"] == "ORDER_CREATED" for r in records)


def test_a_type_alone_is_refused_the_whole_log_is_never_filtered(console, orders):
    response = console.get(reverse(CHANGELIST), {"type": "ORDER_CREATED"})

    assert response.status_code == 200
    assert response.context["rows"] == []
    assert "give one" in response.content.decode()


def test_filtering_by_aggregate_id_and_type_lists_that_aggregates_events(console, orders):
    bob = orders[1]

    assert [r["type"] for r in listed(console, aggregate_id=bob["id"], order="oldest")] == [
        "ORDER_CREATED",
        "STOCK_RESERVED",
        "ORDER_CONFIRMED",
    ]
    assert [r["type"] for r in listed(console, aggregate_type="order", aggregate_id=bob["id"], order="oldest")] == [
        "ORDER_CREATED",
        "ORDER_CONFIRMED",
    ]
    assert [r["type"] for r in listed(console, aggregate_id="A-1")] == ["STOCK_ADDED"]
    assert listed(console, aggregate_id="no-such-aggregate") == []


def test_the_unfiltered_list_shows_the_whole_log_with_its_columns_and_links(console, orders):
    response = console.get(reverse(CHANGELIST))

    assert len(response.context["rows"]) == 7  # STOCK_ADDED and three events per order
    content = response.content.decode()
    for heading in ("Time (UTC)", "Type", "Version", "Aggregate", "Correlation id", "Causation id"):
        assert heading in content
    alice = orders[0]["correlation_id"]
    assert reverse("timeline", args=[alice]) in content
    assert html.escape(f"{reverse(CHANGELIST)}?correlation_id={alice}&order=") in content
    created = EventRecord.objects.get(correlation_id=alice, type="ORDER_CREATED")
    assert detail_url(created.id) in content  # the type links to the event, and so does the causation id


def test_the_whole_log_is_paged_by_a_hundred_in_logged_order_without_a_count(console):
    for n in range(105):
        envelope = Envelope.wrap(
            StockAdded(sku=f"S-{n}", name="item", quantity=1, on_hand=1, reserved=0), aggregate_version=1
        )
        event_log_append(envelope=envelope)

    first = console.get(reverse(CHANGELIST))
    second = console.get(reverse(CHANGELIST), {"page": "2"})

    assert len(first.context["rows"]) == 100
    assert [row["record"]["data"]["sku"] for row in first.context["rows"]][:3] == ["S-0", "S-1", "S-2"]
    assert first.context["pager"]["count"] is None  # the log is never counted
    assert "page=2" in first.content.decode()
    assert len(second.context["rows"]) == 5
    assert not second.context["pager"]["next"]
    assert not {r["record"]["id"] for r in first.context["rows"]} & {r["record"]["id"] for r in second.context["rows"]}


def test_a_transactions_events_are_paginated_and_the_pages_keep_the_filter(console):
    for n in range(105):
        envelope = Envelope.wrap(
            StockAdded(sku=f"S-{n}", name="item", quantity=1, on_hand=1, reserved=0), aggregate_version=1
        )
        envelope = Envelope(**{**envelope.to_dict(), "occurred_at": envelope.occurred_at, "correlation_id": "bulk"})
        event_index_append(envelope)

    first = console.get(reverse(CHANGELIST), {"correlation_id": "bulk"})
    second = console.get(reverse(CHANGELIST), {"correlation_id": "bulk", "page": "2"})

    assert len(first.context["rows"]) == 100
    assert first.context["pager"]["count"] == 105
    assert "correlation_id=bulk&amp;page=2" in first.content.decode()
    assert len(second.context["rows"]) == 5
    assert not {r["record"]["id"] for r in first.context["rows"]} & {r["record"]["id"] for r in second.context["rows"]}


def test_an_events_page_shows_its_data_pretty_printed_and_links_its_transaction(console, orders):
    alice = orders[0]
    reserved = EventRecord.objects.get(correlation_id=alice["correlation_id"], type="STOCK_RESERVED")

    response = console.get(detail_url(reserved.id))

    assert response.status_code == 200
    content = response.content.decode()
    assert html.escape(json.dumps(reserved.data, indent=2, sort_keys=True)) in content
    assert f'"order_id": "{alice["id"]}"' in response.context["data_pretty"]
    assert reverse("timeline", args=[alice["correlation_id"]]) in content
    assert detail_url(reserved.causation_id) in content  # the ORDER_CREATED that caused it
    assert "published by inventory" in content


def test_an_unknown_event_gets_404(console, orders):
    assert console.get(detail_url("6f1c1a52-5a0e-4d55-9c2c-1f6f0f8b2a01")).status_code == 404


def test_a_user_who_is_not_staff_is_sent_to_the_login_page(user, orders):
    client = Client()
    client.force_login(user)

    for url in (reverse(CHANGELIST), detail_url(EventRecord.objects.first().id)):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))


def test_staff_without_the_view_permission_get_403(staff, orders):
    client = staff_client(staff, "view_deadletter")

    assert client.get(reverse(CHANGELIST)).status_code == 403
    assert client.get(detail_url(EventRecord.objects.first().id)).status_code == 403


def test_staff_with_the_view_permission_see_the_list_and_an_event(staff, orders):
    client = staff_client(staff, "view_eventlogentry")

    assert len(listed(client)) == 7
    assert client.get(detail_url(EventRecord.objects.first().id)).status_code == 200
    index = client.get(reverse("admin:index")).content.decode()
    assert reverse(CHANGELIST) in index


def test_even_a_superuser_can_only_view_the_event_log(console, orders):
    superuser = get_user_model().objects.get(username="console-admin")
    request = RequestFactory().get(reverse(CHANGELIST))
    request.user = superuser
    model_admin = admin.site._registry[EventLogEntry]

    assert model_admin.has_view_permission(request)
    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request)
    assert not model_admin.has_delete_permission(request)
    assert [p.codename for p in Permission.objects.filter(content_type__model="eventlogentry")] == [
        "view_eventlogentry"
    ]
    index = console.get(reverse("admin:index")).content.decode()
    assert reverse(CHANGELIST) in index
    assert f"{reverse(CHANGELIST)}add/" not in index


def test_the_admin_entry_point_has_no_table():
    assert EventLogEntry._meta.db_table not in connection.introspection.table_names()
