"""One trace per business transaction: an order's POST, its reservation, its confirmation and its
projection are spans of one trace, each consumer span a child of the span that raised its event."""

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from eventing.telemetry import tracing
from inventory.services import stock_item_create
from tests.helpers import pump

pytestmark = pytest.mark.django_db(transaction=True)


def consumer_spans(trace: list[ReadableSpan]) -> dict[tuple[str, str], ReadableSpan]:
    """(consumer group, event type) -> its processing span."""
    return {
        (span.attributes["messaging.consumer.group.name"], span.attributes["eventing.event.type"]): span
        for span in trace
        if span.kind is SpanKind.CONSUMER
    }


def test_an_orders_request_and_every_consumer_it_reaches_form_one_trace(spans, staff_api):
    stock_item_create(sku="T-1", name="Traced", quantity=5)
    pump()
    spans.clear()

    response = staff_api.post(
        "/api/orders/", {"customer_id": "c", "lines": [{"sku": "T-1", "quantity": 1}]}, format="json"
    )
    assert response.status_code == 202
    pump()

    [request] = [s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER]
    trace_id = request.context.trace_id
    trace = [s for s in spans.get_finished_spans() if s.context.trace_id == trace_id]
    consumed = consumer_spans(trace)

    # The saga: the request raised ORDER_CREATED; inventory's handling of it raised STOCK_RESERVED; the
    # orders consumer's handling of that raised ORDER_CONFIRMED. Each consumer span is the child of the span
    # that raised its event, and the projections consumer projects each event under its own span.
    created_by_inventory = consumed[("inventory", "ORDER_CREATED")]
    reserved_by_orders = consumed[("orders", "STOCK_RESERVED")]
    assert created_by_inventory.parent.span_id == request.context.span_id
    assert reserved_by_orders.parent.span_id == created_by_inventory.context.span_id
    assert consumed[("projections", "ORDER_CREATED")].parent.span_id == request.context.span_id
    assert consumed[("projections", "STOCK_RESERVED")].parent.span_id == created_by_inventory.context.span_id
    assert consumed[("projections", "ORDER_CONFIRMED")].parent.span_id == reserved_by_orders.context.span_id

    span = consumed[("orders", "STOCK_RESERVED")]
    assert span.attributes["messaging.system"] == "redis"
    assert span.attributes["messaging.operation.type"] == "process"
    assert span.attributes["messaging.destination.name"].startswith("test-stream")
    assert span.attributes["messaging.message.id"]
    # Redis, MongoDB and the database's calls made while handling are spans of the trace too.
    names = {s.name for s in trace}
    assert any(s.kind is SpanKind.CLIENT and s.attributes.get("db.system.name") for s in trace), names

    # The timeline and the admin's event log show the trace id.
    timeline = staff_api.get(f"/api/timeline/{response['X-Correlation-ID']}/").json()
    assert {event["trace_id"] for event in timeline["events"]} == {format(trace_id, "032x")}


def test_without_tracing_no_event_carries_a_trace_context(staff_api):
    assert not tracing.enabled()
    stock_item_create(sku="U-1", name="Untraced", quantity=5)
    pump()
    response = staff_api.post(
        "/api/orders/", {"customer_id": "c", "lines": [{"sku": "U-1", "quantity": 1}]}, format="json"
    )
    pump()
    timeline = staff_api.get(f"/api/timeline/{response['X-Correlation-ID']}/").json()
    assert {event["trace_id"] for event in timeline["events"]} == {None}


def test_the_admin_event_log_shows_each_events_trace_id(spans, staff_api):
    created = staff_api.post("/api/inventory/items/", {"sku": "A-1", "name": "Admin", "quantity": 5}, format="json")
    assert created.status_code == 201
    pump()
    [request] = [s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER]
    admin = Client()
    admin.force_login(get_user_model().objects.create_superuser(username="root", password="pw-root"))

    page = admin.get("/admin/eventing/eventlogentry/?aggregate_id=A-1").content.decode()

    assert f'<td class="id trace-id">{format(request.context.trace_id, "032x")}</td>' in page
