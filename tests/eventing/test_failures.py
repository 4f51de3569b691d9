"""Retries, dead letters and reclaiming, against the real Redis."""

import json
import time

import pytest
from django.db import OperationalError

from eventing.consumer.runner import StreamConsumer
from eventing.contract import consumers as registry
from eventing.contract.envelope import Envelope
from eventing.contract.errors import PermanentError
from eventing.models import DeadLetter, DeadLetterAction, ProcessedEvent
from eventing.services import dead_letter_discard, dead_letter_retry
from eventing.transport.streams import dead_letter_stream, retry_stream
from inventory.events import StockAdded
from orders.models import CatalogItem
from tests.eventing.test_consumer import pending_count, stock_added, xadd
from tests.helpers import scratch_consumer

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def fast_retries(settings):
    settings.EVENTING_RETRY_BASE_MS = 1
    settings.EVENTING_RETRY_MAX_MS = 5


@pytest.fixture
def probe(monkeypatch):
    """A consumer 'probe' whose STOCK_ADDED handler stores a 'probe:<sku>' catalog item, failing as told."""
    probe = scratch_consumer(monkeypatch, "probe")
    state = {"calls": 0, "error": None, "errors_left": 10**9}

    @registry.handles(probe, StockAdded)
    def store(event: StockAdded, envelope: Envelope) -> None:
        state["calls"] += 1
        if state["error"] is not None and state["errors_left"] > 0 and event.sku.startswith("POISON"):
            state["errors_left"] -= 1
            raise state["error"]
        CatalogItem.objects.create(sku=f"probe:{event.sku}", name=event.name)

    return state


def run(name: str = "probe", *, max_retry_wait: float = 60.0, **kwargs) -> StreamConsumer:
    consumer = StreamConsumer(name=name, block_ms=5, **kwargs)
    consumer.run_until_idle(max_retry_wait=max_retry_wait)
    return consumer


def test_a_failing_event_is_retried_then_dead_lettered_after_max_attempts_while_others_flow(
    settings, redis_client, stream, probe
):
    settings.EVENTING_MAX_ATTEMPTS = 3
    probe["error"] = ValueError("handler bug")
    poison = stock_added("POISON-1")
    xadd(redis_client, stream, poison)
    xadd(redis_client, stream, stock_added("GOOD-1"))

    run()

    assert probe["calls"] == 3 + 1
    assert CatalogItem.objects.filter(sku="probe:GOOD-1").exists()
    dead = DeadLetter.objects.get()
    assert (dead.reason, dead.attempts, dead.status) == ("max attempts", 3, "PENDING")
    assert (dead.event_id, dead.event_type, dead.consumer_group) == (poison.id, "STOCK_ADDED", "probe")
    assert dead.correlation_id == poison.correlation_id
    assert dead.error_class == "builtins.ValueError" and dead.error_message == "handler bug"
    assert 'raise state["error"]' in dead.traceback
    assert dead.handler.endswith("probe.<locals>.store")
    assert json.loads(dead.payload)["type"] == "STOCK_ADDED"
    assert dead.first_failed_at <= dead.last_failed_at
    assert redis_client.xlen(dead_letter_stream(stream)) == 1
    assert pending_count(redis_client, stream, "probe") == 0


def test_max_attempts_can_be_set_per_consumer(settings, redis_client, stream, probe):
    settings.EVENTING_MAX_ATTEMPTS_BY_CONSUMER = {"probe": 2}
    probe["error"] = ValueError("bug")
    xadd(redis_client, stream, stock_added("POISON-1"))
    run()
    assert probe["calls"] == 2
    assert DeadLetter.objects.get().attempts == 2


def test_a_declared_permanent_error_is_dead_lettered_on_the_first_delivery(redis_client, stream, probe):
    probe["error"] = PermanentError("this order can never exist")
    xadd(redis_client, stream, stock_added("POISON-1"))
    run()
    assert probe["calls"] == 1
    dead = DeadLetter.objects.get()
    assert (dead.reason, dead.attempts) == ("permanent error", 1)


def envelope_doc(**changes) -> str:
    doc = stock_added("X-1").to_dict()
    doc.update(changes)
    return json.dumps(doc)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"type": "STOCK_ADDED", "data": "{nope"}, "undecodable"),
        ({"type": "STOCK_ADDED", "timestamp": "x"}, "undecodable"),
        ({"type": "NOPE", "data": envelope_doc(type="NOPE")}, "unknown type"),
        ({"type": "STOCK_ADDED", "data": envelope_doc(version=9)}, "unsupported version"),
        ({"type": "STOCK_ADDED", "data": envelope_doc(data={"sku": "X"})}, "invalid event"),
        ({"type": "STOCK_ADDED", "data": envelope_doc(data={**stock_added().data, "on_hand": "7"})}, "invalid event"),
        ({"type": "STOCK_ADDED", "data": envelope_doc(correlation_id="x" * 3000)}, "oversize"),
        ({"type": "T" * 300, "data": envelope_doc(type="T" * 300)}, "oversize"),
        ({"type": "STOCK_ADDED", "data": envelope_doc(aggregate_id="x" * 129)}, "oversize"),
        ({"type": "STOCK_ADDED", "data": "[" * 100 + "]" * 100}, "oversize"),
        ({"type": "STOCK_ADDED", "data": "[1, 2]"}, "undecodable"),
        ({"type": "STOCK_ADDED", "data": '"an envelope"'}, "undecodable"),
    ],
    ids=[
        "bad-json",
        "no-data",
        "unknown-type",
        "future-version",
        "missing-field",
        "wrong-type",
        "oversize",
        "long-type",
        "long-aggregate-id",
        "deep-nesting",
        "array-envelope",
        "string-envelope",
    ],
)
def test_malformed_entries_are_dead_lettered_on_the_first_delivery_with_their_reason(
    settings, redis_client, stream, probe, fields, reason
):
    settings.EVENTING_MAX_PAYLOAD_BYTES = 2048
    redis_client.xadd(stream, fields)
    xadd(redis_client, stream, stock_added("AFTER-1"))

    consumer = run()

    dead = DeadLetter.objects.get()
    assert dead.reason == reason
    assert dead.attempts == 1
    if reason in ("unknown type", "unsupported version", "invalid event"):  # the envelope itself was readable
        assert (dead.event_id, dead.correlation_id) == (
            json.loads(fields["data"])["id"],
            json.loads(fields["data"])["correlation_id"],
        )
    assert json.loads(dead.payload) == fields  # the raw entry, even when undecodable
    assert CatalogItem.objects.filter(sku="probe:AFTER-1").exists()  # the consumer kept going
    assert consumer.processed == 2
    assert pending_count(redis_client, stream, "probe") == 0


def test_transient_failures_never_count_toward_the_dead_letter_limit(settings, redis_client, stream, probe):
    settings.EVENTING_MAX_ATTEMPTS = 1
    probe["error"] = OperationalError("database is locked")
    probe["errors_left"] = 2
    xadd(redis_client, stream, stock_added("POISON-1"))

    run()

    assert not DeadLetter.objects.exists()
    assert CatalogItem.objects.filter(sku="probe:POISON-1").exists()
    assert probe["calls"] == 3
    assert pending_count(redis_client, stream, "probe") == 0


def test_retrying_a_dead_letter_delivers_it_to_its_own_group_only_and_applies_it_once(
    settings, redis_client, stream, probe
):
    settings.EVENTING_MAX_ATTEMPTS = 2
    probe["error"] = ValueError("bug")
    xadd(redis_client, stream, stock_added("POISON-1"))
    run()
    orders = run("orders")  # another group reads the same stream
    dead = DeadLetter.objects.get()

    probe["error"] = None  # the cause is fixed
    [result] = dead_letter_retry(dead_letters=[dead], actor="tester")
    assert result.done
    assert redis_client.xlen(retry_stream(stream, "probe")) == 1
    run()
    run("orders")

    assert CatalogItem.objects.filter(sku="probe:POISON-1").count() == 1
    assert ProcessedEvent.objects.filter(consumer="probe").count() == 1
    assert orders.processed == 1  # the orders group saw the original only, never the retry
    assert redis_client.xlen(retry_stream(stream, "orders")) == 0
    dead.refresh_from_db()
    assert dead.status == "RETRIED"
    [again] = dead_letter_retry(dead_letters=[dead], actor="tester")
    assert not again.done
    assert DeadLetterAction.objects.filter(kind="retry").count() == 2


def test_discarding_needs_a_reason_and_is_audited(settings, redis_client, stream, probe):
    probe["error"] = PermanentError("never")
    xadd(redis_client, stream, stock_added("POISON-1"))
    run()
    dead = DeadLetter.objects.get()

    from core.exceptions import InvalidInput

    with pytest.raises(InvalidInput):
        dead_letter_discard(dead_letters=[dead], actor="tester", reason="  ")
    [result] = dead_letter_discard(dead_letters=[dead], actor="tester", reason="duplicate of a manual fix")

    assert result.done
    dead.refresh_from_db()
    assert dead.status == "DISCARDED"
    action = DeadLetterAction.objects.get()
    assert (action.kind, action.actor, action.reason, action.result) == (
        "discard",
        "tester",
        "duplicate of a manual fix",
        "discarded",
    )


def test_entries_of_a_dead_consumer_are_claimed_and_its_name_removed(settings, redis_client, stream):
    settings.EVENTING_CLAIM_IDLE_MS = 100
    xadd(redis_client, stream, stock_added("CLAIM-1"))
    dead = StreamConsumer(name="orders", consumer_id="dead-1", block_ms=5)
    dead.ensure_group()
    assert dead.read(">")  # delivered to dead-1, which then died
    time.sleep(0.2)

    alive = StreamConsumer(name="orders", consumer_id="alive-1", block_ms=5)
    alive.claim_stale()

    assert CatalogItem.objects.filter(sku="CLAIM-1").exists()
    assert pending_count(redis_client, stream, "orders") == 0
    time.sleep(0.2)
    alive.claim_stale()  # dead-1 holds nothing now and has been idle: it is forgotten
    assert {c["name"] for c in redis_client.xinfo_consumers(stream, "orders")} == {"alive-1"}


def test_a_consumer_holding_entries_is_never_removed(settings, redis_client, stream):
    settings.EVENTING_CLAIM_IDLE_MS = 60_000
    xadd(redis_client, stream, stock_added("HOLD-1"))
    holder = StreamConsumer(name="orders", consumer_id="slow-1", block_ms=5)
    holder.ensure_group()
    holder.read(">")

    StreamConsumer(name="orders", consumer_id="other-1", block_ms=5).claim_stale()

    assert "slow-1" in {c["name"] for c in redis_client.xinfo_consumers(stream, "orders")}
    assert pending_count(redis_client, stream, "orders") == 1


def test_a_handler_declared_permanent_error_is_dead_lettered_at_once(redis_client, stream):
    from inventory.events import StockReserved

    missing_order = "6f1c1a52-5a0e-4d55-9c2c-1f6f0f8b2a01"
    reserved = Envelope.wrap(StockReserved(order_id=missing_order, lines=[], items=[]), aggregate_version=1)
    xadd(redis_client, stream, reserved)

    run("orders")

    dead = DeadLetter.objects.get()
    assert (dead.reason, dead.attempts, dead.error_class) == ("permanent error", 1, "orders.services.OrderNotFound")


def test_run_until_idle_waits_for_a_retry_still_in_its_backoff(settings, redis_client, stream, probe):
    # The backoff (300 ms, then 600 ms) is far longer than a read: returning when nothing new
    # arrived would leave the later attempts undone.
    settings.EVENTING_RETRY_BASE_MS = 300
    settings.EVENTING_RETRY_MAX_MS = 600
    settings.EVENTING_MAX_ATTEMPTS = 3
    probe["error"] = ValueError("handler bug")
    xadd(redis_client, stream, stock_added("POISON-1"))

    started = time.monotonic()
    run()

    assert probe["calls"] == 3
    assert DeadLetter.objects.get().attempts == 3
    assert time.monotonic() - started >= 0.9  # it waited out both backoffs


def test_run_until_idle_bounds_its_wait_for_retries(settings, redis_client, stream, probe):
    settings.EVENTING_RETRY_BASE_MS = 60_000
    settings.EVENTING_RETRY_MAX_MS = 60_000
    probe["error"] = ValueError("handler bug")
    xadd(redis_client, stream, stock_added("POISON-1"))

    started = time.monotonic()
    run(max_retry_wait=0.5)

    assert probe["calls"] == 1
    assert time.monotonic() - started < 30  # not the 60 s backoff
    assert pending_count(redis_client, stream, "probe") == 1  # still there for its retry
