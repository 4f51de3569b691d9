"""Changing EVENTING_PARTITIONS by the procedure of docs/scaling.md — stop the producers, let the relay and
the consumers drain the bus (`manage.py streams --drained`), switch, start again — from 1 to 4 and from 4 to
2 partitions with events in flight at each switch: every event is applied once by every consumer and
logged once, none is lost, and a consumer added afterwards catches up on all of them from the event log."""

import io
import threading
from collections import Counter

import pytest
from django.core.management import CommandError, call_command
from mongoengine.connection import get_db

from eventing.consumer.runner import StreamConsumer
from eventing.contract import consumers as registry
from eventing.contract.envelope import Envelope
from eventing.models import OutboxEvent, ProcessedEvent
from eventing.readside.event_log import logged_before
from eventing.transport.client import get_redis
from eventing.transport.relay import publish_pending
from eventing.transport.streams import partition_streams, retry_stream, stream_for
from inventory.services import stock_item_create
from orders.models import Order
from orders.read_models import OrderView
from orders.services import OrderLineIn, order_cancel, order_place
from tests.helpers import pump, scratch_consumer

pytestmark = pytest.mark.django_db(transaction=True)

SKUS = ("A-1", "B-2", "C-3", "D-4", "E-5", "F-6")
UNREACHABLE = "redis://127.0.0.1:1/0"


def place(count: int, *, tag: str) -> list[Order]:
    return [order_place(customer_id=f"{tag}-{n % 3}", lines=[OrderLineIn(SKUS[n % 6], 1)]) for n in range(count)]


def put_events_in_flight(settings, *, tag: str) -> None:
    """What a running system has in flight when its producers stop: events published and read by nobody yet,
    events an inventory consumer read and then died holding (pending under it), and rows the committing
    process could not publish (left to the relay)."""
    place(6, tag=f"{tag}-read")
    crashed = StreamConsumer(name="inventory", consumer_id=f"crashed-{tag}", count=2, block_ms=5)
    crashed.ensure_group()
    assert crashed.read(">")  # delivered to it on some partition(s), never acked
    place(4, tag=f"{tag}-published")
    redis_url, settings.REDIS_URL = settings.REDIS_URL, UNREACHABLE
    place(3, tag=f"{tag}-unpublished")
    settings.REDIS_URL = redis_url
    assert OutboxEvent.objects.filter(published_at__isnull=True).count() == 3


def drain(*, tag: str) -> None:
    """The relay publishes what is left and the consumers run until they have read and acked everything;
    the crashed consumer is restarted under its name, so it re-reads what it held."""
    with pytest.raises(CommandError, match="not yet published"):
        call_command("streams", "--drained", stdout=io.StringIO())
    StreamConsumer(name="inventory", consumer_id=f"crashed-{tag}", block_ms=5).run_until_idle()
    pump()
    call_command("streams", "--drained", stdout=io.StringIO())  # raises unless drained


def assert_every_event_applied_once() -> None:
    events = Counter(OutboxEvent.objects.values_list("event_type", flat=True))
    for name in ("inventory", "orders"):
        handled = {handler.event_type for handler in registry.consumer_handlers(name)}
        expected = sum(count for event_type, count in events.items() if event_type in handled)
        assert ProcessedEvent.objects.filter(consumer=name).count() == expected, name
    logged = [doc["_id"] for doc in get_db()["event_log"].find({}, {"_id": 1})]
    assert len(logged) == len(set(logged))
    assert set(logged) == {str(event_id) for event_id in OutboxEvent.objects.values_list("event_id", flat=True)}
    statuses = dict(Order.objects.values_list("id", "status"))
    assert set(statuses.values()) <= {"CONFIRMED", "REJECTED", "CANCELLED"}
    assert {view.pk: view.status for view in OrderView.objects.all()} == {str(k): v for k, v in statuses.items()}


def assert_nothing_pending(client, streams: list[str]) -> None:
    for stream in streams:
        for group in client.xinfo_groups(stream):
            assert group["pending"] == 0, (stream, group["name"])
            for retry in (retry_stream(stream, group["name"]),):
                if client.exists(retry):
                    assert all(g["pending"] == 0 for g in client.xinfo_groups(retry))


def test_repartitioning_from_1_to_4_and_from_4_to_2_with_events_in_flight_applies_every_event_once(
    settings, redis_client, stream, monkeypatch
):
    settings.EVENTING_PARTITIONS = 1
    for sku in SKUS:
        stock_item_create(sku=sku, name=sku, quantity=100)
    pump()
    early = place(6, tag="p1")
    pump()

    put_events_in_flight(settings, tag="p1")
    drain(tag="p1")
    settings.EVENTING_PARTITIONS = 4  # the switch, while nothing runs
    for order in early[:3]:  # an order from before: its next events go to its partition now
        order_cancel(order_id=str(order.id))
    place(6, tag="p4")
    pump()
    assert_every_event_applied_once()

    put_events_in_flight(settings, tag="p4")
    drain(tag="p4")
    retired = partition_streams()
    settings.EVENTING_PARTITIONS = 2
    for order in early[3:]:
        order_cancel(order_id=str(order.id))
    place(6, tag="p2")
    pump()
    assert_every_event_applied_once()
    assert_nothing_pending(redis_client, [stream, *retired, *partition_streams()])
    assert stream in set(OutboxEvent.objects.values_list("stream", flat=True)) <= {stream, *retired}  # p0, p1 reused

    # A consumer added now sees every event once: from the log those of the retired streams (the single stream,
    # partitions 2 and 3 of four) and the partitions' trimmed ones, then the partitions' own entries.
    call_command("trim_streams", stdout=io.StringIO())
    counter = scratch_consumer(monkeypatch, "counter")
    seen: Counter[str] = Counter()

    @registry.handles(counter, registry.ALL_EVENTS, idempotent=True)
    def count(event, envelope: Envelope) -> None:
        seen[envelope.id] += 1

    late = StreamConsumer(name="counter", block_ms=5)
    late.catch_up_from_log(threading.Event(), history=logged_before)
    late.run_until_idle()
    assert seen == Counter({str(event_id): 1 for event_id in OutboxEvent.objects.values_list("event_id", flat=True)})


def test_a_row_left_unpublished_across_a_repartitioning_goes_to_its_aggregates_partition_now(settings, stream):
    settings.EVENTING_PARTITIONS = 1
    redis_url, settings.REDIS_URL = settings.REDIS_URL, UNREACHABLE
    stock_item_create(sku="A-1", name="A", quantity=1)
    settings.REDIS_URL = redis_url
    assert OutboxEvent.objects.get().stream == stream

    settings.EVENTING_PARTITIONS = 4
    assert publish_pending(client=get_redis(), batch_size=10, grace_seconds=0) == 1

    row = OutboxEvent.objects.get()
    assert row.stream == stream_for("A-1") != stream
    assert get_redis().xlen(row.stream) == 1
    StreamConsumer(name="orders", block_ms=5).run_until_idle()
    assert ProcessedEvent.objects.filter(consumer="orders").count() == 1


def test_a_dead_letter_retried_after_a_repartitioning_goes_to_its_aggregates_partition_now(
    settings, stream, monkeypatch
):
    from eventing.models import DeadLetter
    from eventing.services import dead_letter_retry
    from inventory.events import StockAdded
    from orders.models import CatalogItem

    probe = scratch_consumer(monkeypatch, "probe")
    failing = {"on": True}

    @registry.handles(probe, StockAdded)
    def store(event: StockAdded, envelope: Envelope) -> None:
        if failing["on"]:
            raise ValueError("handler bug")
        CatalogItem.objects.create(sku=f"probe:{event.sku}", name=event.name)

    settings.EVENTING_PARTITIONS = 1
    settings.EVENTING_MAX_ATTEMPTS = 1
    stock_item_create(sku="B-2", name="B", quantity=1)
    StreamConsumer(name="probe", block_ms=5).run_until_idle()
    dead = DeadLetter.objects.get()
    assert dead.stream == stream

    settings.EVENTING_PARTITIONS = 4  # drained: the dead letter waits in the table, not on the bus
    failing["on"] = False
    [result] = dead_letter_retry(dead_letters=[dead], actor="tester")
    assert result.done and retry_stream(stream_for("B-2"), "probe") in result.message
    StreamConsumer(name="probe", block_ms=5).run_until_idle()
    assert CatalogItem.objects.filter(sku="probe:B-2").count() == 1
