"""The timeline of one business transaction, from orders placed through the API and the real consumers."""

import uuid

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from eventing.contract import context
from eventing.contract.envelope import Envelope
from eventing.readside.event_index import EventsByAggregate, EventsByCorrelation
from eventing.readside.event_log import EventRecord
from eventing.readside.projections import active_collection
from eventing.selectors import timeline_get
from inventory.events import StockReserved
from inventory.services import stock_item_create
from tests.eventing.test_consumer import xadd
from tests.helpers import pump

pytestmark = pytest.mark.django_db(transaction=True)

ORDERS = "/api/orders/"


@pytest.fixture
def stock():
    stock_item_create(sku="A-1", name="Apple", quantity=10)
    pump()  # the orders app learns the sku from STOCK_ADDED


def place_order(staff_api: APIClient, *, customer: str = "alice", quantity: int = 1) -> dict:
    response = staff_api.post(
        ORDERS, {"customer_id": customer, "lines": [{"sku": "A-1", "quantity": quantity}]}, format="json"
    )
    assert response.status_code == 202
    return response.json()


def timeline(client: APIClient, correlation_id: str):
    return client.get(reverse("timeline", args=[correlation_id]))


def consumers(event: dict) -> list[str]:
    return [item["consumer"] for item in event["processed_by"]]


def test_an_orders_timeline_lists_its_events_in_order_with_producers_and_who_applied_them(staff_api, stock):
    order = place_order(staff_api)
    pump()

    response = timeline(staff_api, order["correlation_id"])

    assert response.status_code == 200
    body = response.json()
    assert body["correlation_id"] == order["correlation_id"]
    assert body["event_count"] == 3
    created, reserved, confirmed = body["events"]
    assert [e["type"] for e in body["events"]] == ["ORDER_CREATED", "STOCK_RESERVED", "ORDER_CONFIRMED"]
    assert [e["producer"] for e in body["events"]] == ["orders", "inventory", "orders"]
    assert sorted(consumers(created)) == ["inventory", "projections"]
    assert sorted(consumers(reserved)) == ["orders", "projections"]
    assert consumers(confirmed) == ["projections"]
    assert all(item["at"] for event in body["events"] for item in event["processed_by"])
    assert [e["consumers_expected"] for e in body["events"]] == [
        ["inventory", "projections"],
        ["orders", "projections"],
        ["projections"],
    ]
    # Each event was caused by the one before it, and the first by the request.
    assert created["causation_id"] is None
    assert reserved["causation_id"] == created["id"]
    assert confirmed["causation_id"] == reserved["id"]
    assert (created["aggregate_type"], created["aggregate_id"], created["aggregate_version"]) == (
        "order",
        order["id"],
        1,
    )
    assert (reserved["aggregate_type"], reserved["aggregate_id"]) == ("reservation", order["id"])
    assert created["data"]["lines"] == [{"sku": "A-1", "quantity": 1}]
    assert created["occurred_at"] <= reserved["occurred_at"] <= confirmed["occurred_at"]
    assert body["dead_letters"] == []
    assert all(event["dead_letters"] == [] for event in body["events"])


def test_the_logs_indexes_hold_each_events_place_in_the_log_and_the_records_come_from_the_log(staff_api, stock):
    order = place_order(staff_api)
    pump()

    by_correlation = active_collection(EventsByCorrelation).find_one({"_id": order["correlation_id"]})
    by_aggregate = active_collection(EventsByAggregate).find_one({"_id": order["id"]})

    # No copy of a record: an index document is rewritten with each event of its transaction.
    logged = {record["_id"]: record for record in EventRecord._get_collection().find()}
    for document in (by_correlation, by_aggregate):
        assert len(document["events"]) == 3
        for event_id, position in document["events"].items():
            record = logged[event_id]
            assert position == {name: record[name] for name in ("occurred_at", "stream_ms", "stream_seq")}
    events = staff_api.get("/api/events/", {"aggregate_id": order["id"]}).json()["results"]
    assert [e["type"] for e in events] == ["ORDER_CREATED", "STOCK_RESERVED", "ORDER_CONFIRMED"]
    assert events[0]["data"]["customer_id"] == "alice"


def test_another_transactions_events_stay_out_of_the_timeline(staff_api, stock):
    first, second = place_order(staff_api), place_order(staff_api, customer="bob")
    pump()

    events = timeline(staff_api, second["correlation_id"]).json()["events"]

    assert {event["aggregate_id"] for event in events} == {second["id"]}
    assert first["id"] not in str(events)


def test_an_event_not_yet_applied_shows_which_consumers_are_still_expected(staff_api, stock):
    order = place_order(staff_api)
    pump("projections")  # logged, but inventory has not reserved yet

    [created] = timeline(staff_api, order["correlation_id"]).json()["events"]

    assert created["type"] == "ORDER_CREATED"
    assert consumers(created) == ["projections"]
    assert created["consumers_expected"] == ["inventory", "projections"]


def test_a_dead_letter_shows_under_the_logged_event_it_belongs_to(staff_api, redis_client, stream):
    # A reservation for an order that does not exist: the log records it, the orders consumer gives up on it.
    with context.bind(correlation_id="corr-missing-order"):
        envelope = Envelope.wrap(StockReserved(order_id=str(uuid.uuid4()), lines=[], items=[]), aggregate_version=1)
    xadd(redis_client, stream, envelope)
    pump()

    body = timeline(staff_api, "corr-missing-order").json()

    [event] = body["events"]
    assert event["id"] == envelope.id
    assert consumers(event) == ["projections"]
    assert event["consumers_expected"] == ["orders", "projections"]
    [dead_letter] = event["dead_letters"]
    assert dead_letter["group"] == "orders"
    assert dead_letter["event_id"] == envelope.id
    assert dead_letter["reason"] == "permanent error"
    assert dead_letter["status"] == "PENDING"
    assert dead_letter["attempts"] == 1
    assert "OrderNotFound" in dead_letter["error"]
    assert dead_letter["first_failed_at"] and dead_letter["last_failed_at"]
    assert body["dead_letters"] == []


def test_an_invalid_event_of_the_transaction_is_listed_among_its_dead_letters(staff_api, stock, redis_client, stream):
    order = place_order(staff_api)
    pump()
    # The order's own ORDER_CREATED as it travelled, under a new id and with a field of the wrong type.
    record = EventRecord.objects.get(correlation_id=order["correlation_id"], type="ORDER_CREATED")
    doc = {name: record[name] for name in ("type", "version", "correlation_id", "causation_id", "aggregate_type")}
    broken = Envelope.from_dict(
        {
            **doc,
            "id": str(uuid.uuid4()),
            "occurred_at": record.occurred_at.isoformat(),
            "aggregate_id": record.aggregate_id,
            "aggregate_version": record.aggregate_version,
            "data": {**record.data, "lines": "not a list"},
        }
    )
    xadd(redis_client, stream, broken)
    pump()

    body = timeline(staff_api, order["correlation_id"]).json()

    # It never reached the log, so it is not one of the events but a dead letter of the transaction.
    assert [e["type"] for e in body["events"]] == ["ORDER_CREATED", "STOCK_RESERVED", "ORDER_CONFIRMED"]
    assert all(event["dead_letters"] == [] for event in body["events"])
    assert sorted(d["group"] for d in body["dead_letters"]) == ["inventory", "projections"]
    for dead_letter in body["dead_letters"]:
        assert dead_letter["event_id"] == broken.id
        assert dead_letter["event_type"] == "ORDER_CREATED"
        assert dead_letter["reason"] == "invalid event"
        assert "lines must be a list" in dead_letter["error"]


def test_a_transaction_known_only_by_its_dead_letters_is_found(staff_api, redis_client, stream):
    with context.bind(correlation_id="corr-only-dead-letters"):
        envelope = Envelope.wrap(StockReserved(order_id=str(uuid.uuid4()), lines=[], items=[]), aggregate_version=1)
    xadd(redis_client, stream, Envelope.from_dict({**envelope.to_dict(), "data": {"order_id": 7}}))
    pump()

    response = timeline(staff_api, "corr-only-dead-letters")

    assert response.status_code == 200
    body = response.json()
    assert body["event_count"] == 0
    assert body["events"] == []
    assert {d["group"] for d in body["dead_letters"]} == {"orders", "projections"}


def test_an_unknown_correlation_id_gets_404(staff_api):
    response = timeline(staff_api, str(uuid.uuid4()))

    assert response.status_code == 404
    assert "nothing is known" in response.json()["detail"]


def test_the_timeline_needs_an_authenticated_user(staff_api, stock):
    order = place_order(staff_api)
    pump()

    assert timeline(APIClient(), order["correlation_id"]).status_code == 401


def test_the_timeline_is_browsable(staff_api, stock):
    order = place_order(staff_api)
    pump()

    response = staff_api.get(reverse("timeline", args=[order["correlation_id"]]), HTTP_ACCEPT="text/html")

    assert response.status_code == 200
    assert "text/html" in response["Content-Type"]
    assert "ORDER_CONFIRMED" in response.content.decode()


def test_the_timeline_costs_two_relational_queries_not_one_per_event(staff_api, stock, django_assert_num_queries):
    order = place_order(staff_api)
    pump()

    with django_assert_num_queries(2):  # the inbox and the dead letters; the events come from MongoDB
        timeline = timeline_get(correlation_id=order["correlation_id"])

    assert timeline is not None
    assert timeline["event_count"] == 3
