"""A consumer added later catches up on the whole history, trimmed or not."""

import threading
import time
from collections import Counter

import pytest
from mongoengine.connection import get_db

from eventing.consumer.runner import ConsumerError, StreamConsumer
from eventing.contract import consumers as registry
from eventing.contract.envelope import Envelope
from eventing.contract.events import Event
from eventing.readside.event_log import logged_before
from eventing.transport.client import get_redis
from eventing.transport.trim import trim_streams
from inventory.services import stock_item_create
from orders.services import OrderLineIn, order_place
from tests.helpers import pump, scratch_consumer

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def counter(monkeypatch, stream):
    """A consumer 'counter' that counts events per type in Redis. It is naive on
    purpose (no inbox): an event delivered twice would be counted twice."""
    counter = scratch_consumer(monkeypatch, "counter")
    key = f"eventing:test-counts:{stream}"

    @registry.handles(counter, registry.ALL_EVENTS, idempotent=True)
    def count(event: Event, envelope: Envelope) -> None:
        get_redis().hincrby(key, envelope.type, 1)

    def counts() -> Counter:
        return Counter({t: int(n) for t, n in get_redis().hgetall(key).items()})

    return counts


def logged_counts() -> Counter:
    return Counter(record["type"] for record in get_db()["event_log"].find({}, {"type": 1}))


def place(n: int, customer: str) -> None:
    for _ in range(n):
        order_place(customer_id=customer, lines=[OrderLineIn("A", 1)])


def test_a_consumer_started_from_the_beginning_counts_every_event_once_trimmed_or_not(redis_client, stream, counter):
    stock_item_create(sku="A", name="Apple", quantity=300)
    pump()
    place(500, "early")
    pump(timeout=300)
    assert sum(trim_streams(redis_client, stream).values()) > 1500  # history is gone from the stream ...
    place(5, "recent")  # ... except what came after the trim
    pump()
    assert redis_client.xlen(stream) > 0

    late = StreamConsumer(name="counter", block_ms=5)
    from_log = late.catch_up_from_log(threading.Event(), history=logged_before)
    late.run_until_idle()

    assert from_log > 1500
    assert counter() == logged_counts()  # every event, exactly once
    assert sum(counter().values()) == 1 + 505 * 3  # STOCK_ADDED, and per order CREATED, RESERVED, CONFIRMED

    place(3, "live")  # and it keeps going with the live stream
    pump("inventory", "orders", "projections", "counter")
    time.sleep(0.05)
    assert counter() == logged_counts()


def test_from_beginning_is_refused_for_a_group_that_already_exists(stream, counter):
    StreamConsumer(name="counter", block_ms=5).ensure_group()
    with pytest.raises(ConsumerError, match="already exists"):
        StreamConsumer(name="counter", block_ms=5).catch_up_from_log(threading.Event(), history=logged_before)
