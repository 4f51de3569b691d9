"""The consumer runtime against the real Redis: acks, pending re-reads, duplicates, ordering."""

import threading

import pytest
import redis
from django.db import OperationalError

from eventing.consumer import applying, runner
from eventing.consumer.applying import ChunkSize
from eventing.consumer.runner import StreamConsumer
from eventing.contract import consumers as registry
from eventing.contract.envelope import Envelope
from eventing.models import DeadLetter, ProcessedEvent
from eventing.transport.streams import partition_streams
from inventory.events import StockAdded, StockReserved
from inventory.read_models import StockView
from orders.events import OrderConfirmed, OrderCreated
from orders.models import CatalogItem
from orders.read_models import OrderView
from tests.helpers import scratch_consumer

pytestmark = pytest.mark.django_db(transaction=True)


def xadd(redis_client, stream: str, envelope: Envelope) -> str:
    return redis_client.xadd(
        stream, {"type": envelope.type, "data": envelope.to_json(), "timestamp": envelope.occurred_at.isoformat()}
    )


def stock_added(sku: str = "A-1", *, version: int = 1, on_hand: int = 5) -> Envelope:
    return Envelope.wrap(
        StockAdded(sku=sku, name=f"item {sku}", quantity=on_hand, on_hand=on_hand, reserved=0),
        aggregate_version=version,
    )


def live_read_while_arriving(consumer, redis_client, *arrivals: tuple[float, str, str], tries: int = 1) -> list:
    """The live loop's first read that finds entries, of at most ``tries``, while each ``(seconds, stream, sku)``
    arrives: a STOCK_ADDED of that sku added to that stream that long after the first read began."""
    timers = [threading.Timer(delay, xadd, args=(redis_client, to, stock_added(sku))) for delay, to, sku in arrivals]
    for timer in timers:
        timer.start()
    try:
        for _ in range(tries):
            if batch := consumer.read_new(block=True, stop=threading.Event()):
                return batch
        return []
    finally:
        for timer in timers:
            timer.join(timeout=5)


def pending_count(redis_client, stream: str, group: str) -> int:
    return redis_client.xpending(stream, group)["pending"]


@pytest.fixture
def probe(monkeypatch):
    """A consumer 'probe' whose STOCK_ADDED handler records its calls and fails while told to."""
    probe = scratch_consumer(monkeypatch, "probe")
    state = {"calls": [], "fail": False, "fail_sku": None}

    @registry.handles(probe, StockAdded)
    def record(event: StockAdded, envelope: Envelope) -> None:
        state["calls"].append(envelope.id)
        CatalogItem.objects.create(sku=event.sku, name=event.name)  # a relational effect
        if state["fail"] or event.sku == state["fail_sku"]:
            raise ValueError("handler bug")

    return state


def test_a_failed_handler_leaves_the_entry_pending_and_its_effect_rolled_back(redis_client, stream, probe):
    probe["fail"] = True
    envelope = stock_added()
    xadd(redis_client, stream, envelope)

    # One pass: the retry that follows in the backoff is not waited for.
    StreamConsumer(name="probe", consumer_id="c1", block_ms=5).run_until_idle(max_retry_wait=0)

    assert probe["calls"] == [envelope.id]
    assert pending_count(redis_client, stream, "probe") == 1
    assert not CatalogItem.objects.exists()
    assert not ProcessedEvent.objects.exists()

    probe["fail"] = False
    StreamConsumer(name="probe", consumer_id="c1", block_ms=5).run_until_idle()

    assert pending_count(redis_client, stream, "probe") == 0
    assert CatalogItem.objects.get().sku == "A-1"
    assert ProcessedEvent.objects.get().consumer == "probe"


def test_one_failing_event_in_a_batch_rolls_back_alone(redis_client, stream, probe):
    probe["fail_sku"] = "BAD"
    for sku in ("A-1", "BAD", "A-2"):
        xadd(redis_client, stream, stock_added(sku))

    consumer = StreamConsumer(name="probe", block_ms=5)
    consumer.run_until_idle(max_retry_wait=0)  # one pass: BAD stays pending for its retry

    assert sorted(CatalogItem.objects.values_list("sku", flat=True)) == ["A-1", "A-2"]
    assert ProcessedEvent.objects.count() == 2
    assert consumer.processed == 2
    [pending] = redis_client.xpending_range(stream, "probe", min="-", max="+", count=10)
    assert pending["times_delivered"] >= 1


def test_entries_delivered_before_a_crash_are_reread_on_restart(redis_client, stream):
    envelope = stock_added("B-1")
    xadd(redis_client, stream, envelope)
    consumer = StreamConsumer(name="orders", consumer_id="worker-1", block_ms=5)
    consumer.ensure_group()
    # Delivered to worker-1, which then died before handling or acking it.
    assert consumer.read(">")
    assert pending_count(redis_client, stream, "orders") == 1

    StreamConsumer(name="orders", consumer_id="worker-1", block_ms=5).run_until_idle()

    assert CatalogItem.objects.get(sku="B-1").name == "item B-1"
    assert pending_count(redis_client, stream, "orders") == 0


def test_a_duplicate_delivery_is_applied_once(redis_client, stream, probe):
    envelope = stock_added()
    xadd(redis_client, stream, envelope)
    xadd(redis_client, stream, envelope)

    consumer = StreamConsumer(name="probe", block_ms=5)
    consumer.run_until_idle()

    assert probe["calls"] == [envelope.id]
    assert CatalogItem.objects.count() == 1
    assert consumer.processed == 2  # both entries acked
    assert pending_count(redis_client, stream, "probe") == 0


def test_an_event_already_applied_is_skipped_among_new_ones_of_its_batch(redis_client, stream, probe):
    first = stock_added("A-1")
    xadd(redis_client, stream, first)
    StreamConsumer(name="probe", block_ms=5).run_until_idle()
    later = [stock_added("A-2"), first, stock_added("A-3")]  # the first again, say republished by the relay
    for envelope in later:
        xadd(redis_client, stream, envelope)

    consumer = StreamConsumer(name="probe", block_ms=5)
    consumer.run_until_idle()

    assert probe["calls"] == [first.id, later[0].id, later[2].id]
    assert sorted(CatalogItem.objects.values_list("sku", flat=True)) == ["A-1", "A-2", "A-3"]
    assert ProcessedEvent.objects.count() == 3
    assert consumer.processed == 3  # all acked
    assert pending_count(redis_client, stream, "probe") == 0


def created_and_confirmed(*, quantity: int, placed_at: str) -> tuple[Envelope, Envelope]:
    """Order o-1's ORDER_CREATED (``quantity`` of A-1) and ORDER_CONFIRMED, versions 1 and 2."""
    created = Envelope.wrap(
        OrderCreated(
            order_id="o-1",
            customer_id="c-1",
            customer_seq=1,
            lines=[{"sku": "A-1", "quantity": quantity}],
            placed_at=placed_at,
            channel="api",
        ),
        aggregate_version=1,
    )
    return created, Envelope.wrap(OrderConfirmed(order_id="o-1", customer_id="c-1"), aggregate_version=2)


def test_an_out_of_order_event_never_regresses_a_view(redis_client, stream):
    created, confirmed = created_and_confirmed(quantity=2, placed_at="2026-01-01T00:00:00+00:00")
    # The newer events arrive first, the older ones (and a repeat) after them.
    for envelope in (
        confirmed,
        stock_added(version=3, on_hand=9),
        created,
        stock_added(version=2, on_hand=4),
        confirmed,
    ):
        xadd(redis_client, stream, envelope)

    StreamConsumer(name="projections", block_ms=5).run_until_idle()

    view = OrderView.objects.get(pk="o-1")
    assert view.status == "CONFIRMED"
    assert view.version == 2
    assert view.lines == [{"sku": "A-1", "quantity": 2}]
    assert [(h["status"], h["version"]) for h in view.sorted_history()] == [("PENDING", 1), ("CONFIRMED", 2)]
    stock = StockView.objects.get(pk="A-1")
    assert (stock.on_hand, stock.version, stock.name) == (9, 3, "item A-1")


def test_events_a_consumer_does_not_handle_are_acked_and_skipped(redis_client, stream):
    xadd(redis_client, stream, Envelope.wrap(OrderConfirmed(order_id="o", customer_id="c"), aggregate_version=2))
    consumer = StreamConsumer(name="orders", block_ms=5)
    consumer.run_until_idle()
    assert consumer.processed == 1
    assert pending_count(redis_client, stream, "orders") == 0
    assert not ProcessedEvent.objects.exists()


def test_an_undecodable_entry_is_dead_lettered_without_stopping_the_consumer(redis_client, stream):
    redis_client.xadd(stream, {"type": "STOCK_ADDED", "data": "{not json", "timestamp": "x"})
    xadd(redis_client, stream, stock_added("C-1"))

    StreamConsumer(name="orders", block_ms=5).run_until_idle()

    assert CatalogItem.objects.filter(sku="C-1").exists()
    assert pending_count(redis_client, stream, "orders") == 0
    assert DeadLetter.objects.get().reason == "undecodable"


def test_a_consumer_recreates_its_group_when_the_stream_disappears(redis_client, stream, caplog):
    consumer = StreamConsumer(name="orders", block_ms=5)
    consumer.ensure_group()
    redis_client.delete(stream)  # as after a Redis restart without data

    assert consumer.read(">") == []
    assert "disappeared; recreating it" in caplog.text
    xadd(redis_client, stream, stock_added("D-1"))
    consumer.run_until_idle()
    assert CatalogItem.objects.filter(sku="D-1").exists()


def test_an_unknown_consumer_name_is_refused():
    with pytest.raises(ValueError, match="unknown consumer 'nope'"):
        StreamConsumer(name="nope")


def test_a_batch_function_registered_for_several_event_types_runs_once_per_batch(redis_client, stream, monkeypatch):
    # As a projection registers itself: one handler per event type, all with the same batch function, which
    # must see the batch's events of every type at once (one write per view row, not one per type).
    folder = scratch_consumer(monkeypatch, "folder")
    calls: list[list[str]] = []

    def fold(items: list[tuple[object, Envelope]]) -> None:
        calls.append([envelope.type for _event, envelope in items])

    for event_type in (OrderCreated.TYPE, OrderConfirmed.TYPE):
        registry.register_handler(
            registry.Handler(consumer=folder.name, event_type=event_type, func=fold, idempotent=True, batch=True)
        )
    created, confirmed = created_and_confirmed(quantity=1, placed_at="2026-11-30T09:00:00+00:00")
    for envelope in (created, confirmed):
        xadd(redis_client, stream, envelope)

    StreamConsumer(name=folder.name, consumer_id="c1", block_ms=5).run_until_idle()

    assert calls == [["ORDER_CREATED", "ORDER_CONFIRMED"]]
    assert pending_count(redis_client, stream, folder.name) == 0


def test_handlers_that_run_last_run_after_the_others_of_a_batch_whatever_the_order_they_came_in(
    redis_client, stream, monkeypatch
):
    # As the projections consumer: the event log's handlers are registered before the views', and the
    # routes of a batch's first event type name them before the others' types' views; the views still go first.
    folder = scratch_consumer(monkeypatch, "folder")
    calls: list[str] = []

    def batch_of(name: str):  # noqa: ANN202 - a handler function
        def run(items: list[tuple[object, Envelope]]) -> None:
            calls.append(name)

        return run

    log, created_view, confirmed_view = batch_of("log"), batch_of("created view"), batch_of("confirmed view")
    for event_type in (OrderCreated.TYPE, OrderConfirmed.TYPE):
        handler = registry.Handler(
            consumer=folder.name,
            event_type=event_type,
            func=log,
            idempotent=True,
            batch=True,
            label="log",
            runs_last=True,
        )
        registry.register_handler(handler)
    for event_type, view in ((OrderCreated.TYPE, created_view), (OrderConfirmed.TYPE, confirmed_view)):
        registry.register_handler(
            registry.Handler(
                consumer=folder.name, event_type=event_type, func=view, idempotent=True, batch=True, label=event_type
            )
        )
    assert [h.func for h in registry.handlers_for(folder.name, OrderCreated.TYPE)] == [created_view, log]
    for envelope in created_and_confirmed(quantity=1, placed_at="2026-11-30T09:00:00+00:00"):
        xadd(redis_client, stream, envelope)

    StreamConsumer(name=folder.name, consumer_id="c1", block_ms=5).run_until_idle()

    assert calls == ["created view", "confirmed view", "log"]


def test_the_projections_consumer_writes_the_views_before_the_event_log_and_its_indexes():
    for event_type in (OrderConfirmed.TYPE, StockReserved.TYPE):
        labels = [h.name for h in registry.handlers_for(registry.PROJECTIONS.name, event_type)]
        assert labels[-2:] == [
            "eventing.readside.event_log.append_to_event_log",
            "eventing.readside.event_index.event-index projection",
        ]
        assert len(labels) == 3  # the type's own view first


def test_a_chunk_takes_as_many_entries_as_fit_in_the_commit_time_within_its_bounds():
    chunks = ChunkSize(most=100, seconds=0.010)
    assert chunks.size == 1  # nothing known yet
    chunks.took(1, 0.0002)  # 0.2 ms for one entry and its commit: 50 fit
    assert chunks.size == 50
    chunks.took(50, 0.002)  # 40 us per entry: a whole read batch fits
    assert chunks.size == 100
    chunks.took(100, 0.002)
    assert chunks.size == 100
    chunks.took(100, 0.040)  # 0.4 ms per entry: 25 fit
    assert chunks.size == 25
    chunks.took(1, 0.5)  # slower than the whole budget: one at a time
    assert chunks.size == 1
    chunks.took(0, 0.0)  # nothing measured: as it was
    assert chunks.size == 1


def test_a_failure_count_is_forgotten_when_its_entry_is_applied_on_a_retry(redis_client, stream, probe):
    probe["fail_sku"] = "BAD"
    xadd(redis_client, stream, stock_added("BAD"))
    consumer = StreamConsumer(name="probe", block_ms=5)
    consumer.run_until_idle(max_retry_wait=0)
    failures_key = consumer.partitions.io_of(stream).failures_key
    assert redis_client.hlen(failures_key) == 1

    probe["fail_sku"] = None
    xadd(redis_client, stream, stock_added("A-1"))  # one that never failed, in the same pass
    consumer.run_until_idle(max_retry_wait=5)

    assert sorted(CatalogItem.objects.values_list("sku", flat=True)) == ["A-1", "BAD"]
    assert pending_count(redis_client, stream, "probe") == 0
    assert not redis_client.exists(failures_key)


def test_a_live_batch_short_of_the_read_count_waits_its_linger_for_more_entries(redis_client, stream, settings):
    settings.EVENTING_LINGER_MS_BY_CONSUMER = {"inventory": 300}
    consumer = StreamConsumer(name="inventory", consumer_id="c1", block_ms=5000)
    consumer.ensure_group()
    # Nothing waits: the read blocks for the first entry, then lingers for what comes within 300 ms.
    batch = live_read_while_arriving(consumer, redis_client, (0.05, stream, "L-1"), (0.1, stream, "L-2"))
    assert len(batch) == 2  # the one that came 50 ms after the first joined its batch

    xadd(redis_client, stream, stock_added("L-3"))
    stopping = threading.Event()
    stopping.set()  # a consumer told to stop does not wait
    assert len(consumer.read_new(block=True, stop=stopping)) == 1
    xadd(redis_client, stream, stock_added("L-4"))
    assert len(consumer.read_new(block=False, stop=threading.Event())) == 1  # tools and tests never wait


def test_a_consumer_behind_takes_the_entries_waiting_without_its_linger(redis_client, stream, settings):
    """Entries already waiting came while the consumer applied its last batch: it takes them as they are,
    and one that comes a moment later goes into the next batch."""
    settings.EVENTING_LINGER_MS_BY_CONSUMER = {"inventory": 300}
    consumer = StreamConsumer(name="inventory", consumer_id="c1", block_ms=5000)
    consumer.ensure_group()
    waiting = [xadd(redis_client, stream, stock_added(f"W-{n}")) for n in range(3)]
    batch = live_read_while_arriving(consumer, redis_client, (0.05, stream, "W-LATE"))
    assert [entry.id for entry in batch] == waiting
    late = consumer.read_new(block=True, stop=threading.Event())
    assert len(late) == 1 and late[0].id not in waiting


def counting(monkeypatch, target, name: str) -> list[dict]:
    """Each call of ``target.name`` (a real read) from now on: its keyword arguments."""
    calls: list[dict] = []
    real = getattr(target, name)

    def counted(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, counted)
    return calls


def test_with_leases_an_idle_live_read_makes_one_round_and_what_comes_after_its_pause_lingers(
    redis_client, stream, settings, monkeypatch
):
    """Leased reads never block: an idle read is one round over the partitions, then a pause. What the round
    after that pause finds came after a wait, so the batch lingers for more; what waits for a busy consumer
    does not."""
    settings.EVENTING_PARTITIONS = 2
    settings.EVENTING_LINGER_MS_BY_CONSUMER = {"inventory": 300}
    first, second = partition_streams()
    consumer = StreamConsumer(name="inventory", consumer_id="c1", block_ms=5000)
    consumer.ensure_group()
    consumer.rebalance(force=True)
    assert consumer.partitions.leases is not None and sorted(consumer.partitions.leases.held) == [first, second]
    reads = counting(monkeypatch, consumer.partitions.leases, "read_new")

    assert consumer.read_new(block=True, stop=threading.Event()) == []
    assert sorted(call["partition"] for call in reads) == [first, second]  # one round, not two

    # Rounds 20 ms apart until the first comes: two seconds at most.
    batch = live_read_while_arriving(consumer, redis_client, (0.05, first, "L-1"), (0.1, second, "L-2"), tries=100)
    assert sorted(entry.stream for entry in batch) == [first, second]  # the second came during the linger

    waiting = xadd(redis_client, first, stock_added("W-1"))  # came while the last batch was applied
    batch = live_read_while_arriving(consumer, redis_client, (0.05, second, "W-LATE"))
    assert [entry.id for entry in batch] == [waiting]


def test_the_projections_consumer_lingers_by_default_and_a_setting_overrides_any_consumers_linger(settings):
    assert registry.PROJECTIONS.linger_ms > 0
    assert StreamConsumer(name="projections").linger == registry.PROJECTIONS.linger_ms / 1000
    assert StreamConsumer(name="inventory").linger == 0
    settings.EVENTING_LINGER_MS_BY_CONSUMER = {"projections": 0, "inventory": 20}
    assert StreamConsumer(name="projections").linger == 0
    assert StreamConsumer(name="inventory").linger == 0.02


def test_a_takeover_that_fails_on_the_database_is_done_again_before_anything_new_is_read(
    redis_client, stream, settings, probe, monkeypatch
):
    settings.EVENTING_PARTITIONS = 2
    settings.EVENTING_LEASE_TTL_MS = 5000
    first = StreamConsumer(name="probe", consumer_id="first", block_ms=5)
    first.ensure_group()
    first.rebalance(force=True)  # alone: it takes both partitions
    partition = first.streams[0]
    xadd(redis_client, partition, stock_added("T-1"))
    assert len(first.read(">", block=False)) == 1  # read, and stopped before applying it: pending under "first"
    first.partitions.release()

    fences = iter([OperationalError("database is locked")])  # the second process's first fence fails

    def fence_failing_once(**kwargs) -> None:
        error = next(fences, None)
        if error is not None:
            raise error
        applying.fence(**kwargs)

    monkeypatch.setattr(runner, "fence", fence_failing_once)
    second = StreamConsumer(name="probe", consumer_id="second", block_ms=5)
    with pytest.raises(OperationalError):
        second.rebalance(force=True)
    # The run loop retries with a forced rebalance: it takes the partitions again and takes them over first.
    assert second.rebalance(force=True) == 1
    assert list(CatalogItem.objects.values_list("sku", flat=True)) == ["T-1"]
    assert pending_count(redis_client, partition, "probe") == 0


def test_a_live_batchs_acks_go_with_the_next_read(redis_client, stream, probe):
    """The live loop's acks of a batch applied without a failure are sent with its next read, in one round trip:
    until then the entries stay pending, and nothing reads them as pending again."""
    consumer = StreamConsumer(name="probe", consumer_id="c1")
    consumer.ensure_group()
    consumer.retry_due()  # as the loop does before each read: nothing failed, so none has a failure count
    for n in range(2):
        xadd(redis_client, stream, stock_added(f"N-{n}"))
    batch = consumer.read_new(block=False, stop=threading.Event())
    assert consumer.process(batch, ack_with_next_read=True) == 2
    assert CatalogItem.objects.count() == 2  # applied and committed,
    assert pending_count(redis_client, stream, "probe") == 2  # not acked yet

    # A restart of the loop re-reads its own pending entries: the acks go first, so there are none.
    consumer.drain_pending(threading.Event())
    assert consumer.processed == 2
    assert pending_count(redis_client, stream, "probe") == 0

    # Live: each batch's acks go with the read of the next.
    xadd(redis_client, stream, stock_added("N-2"))
    batch = consumer.read_new(block=False, stop=threading.Event())
    consumer.process(batch, ack_with_next_read=True)
    newest = xadd(redis_client, stream, stock_added("N-3"))
    assert [entry.id for entry in consumer.read_new(block=False, stop=threading.Event())] == [newest]
    assert [item["message_id"] for item in redis_client.xpending_range(stream, "probe", "-", "+", 10)] == [newest]


@pytest.mark.parametrize(
    ("client", "fails"),
    [
        ("raw", lambda consumer: consumer.read_new(block=False, stop=threading.Event())),  # a read's round trip
        ("redis", lambda consumer: consumer.partitions.flush_acks()),  # an ack's own
    ],
    ids=["read", "ack"],
)
def test_acks_waiting_for_a_round_trip_that_fails_go_with_the_next_read(redis_client, stream, probe, client, fails):
    consumer = StreamConsumer(name="probe", consumer_id="c1")
    consumer.ensure_group()
    consumer.retry_due()
    xadd(redis_client, stream, stock_added("F-1"))
    consumer.process(consumer.read_new(block=False, stop=threading.Event()), ack_with_next_read=True)
    reachable = getattr(consumer.partitions, client)
    setattr(consumer.partitions, client, redis.Redis.from_url("redis://127.0.0.1:1/0"))  # nothing listens on port 1
    with pytest.raises(redis.ConnectionError):
        fails(consumer)
    setattr(consumer.partitions, client, reachable)
    assert pending_count(redis_client, stream, "probe") == 1
    # The loop's restart re-reads its own pending entries: the acks go first, so nothing is applied again.
    consumer.drain_pending(threading.Event())
    assert consumer.processed == 1
    assert pending_count(redis_client, stream, "probe") == 0


def test_a_loop_told_to_stop_sends_the_acks_of_its_last_batch(redis_client, stream, monkeypatch):
    stopper = scratch_consumer(monkeypatch, "stopper")
    stop = threading.Event()

    @registry.handles(stopper, StockAdded)
    def stop_after(event: StockAdded, envelope: Envelope) -> None:
        CatalogItem.objects.create(sku=event.sku, name=event.name)
        stop.set()  # the loop ends after this batch: no next read carries its acks

    xadd(redis_client, stream, stock_added("S-1"))
    consumer = StreamConsumer(name="stopper", consumer_id="c1", block_ms=100)
    consumer.ensure_group()
    consumer.retry_due()
    consumer.run(stop=stop)
    assert consumer.processed == 1
    assert pending_count(redis_client, stream, "stopper") == 0


def test_a_batch_with_a_failure_is_acked_at_once(redis_client, stream, probe):
    """A failed entry's count is forgotten with its ack, in the batch's own round trip: no later read may find
    it pending with a count (it would be retried once more)."""
    consumer = StreamConsumer(name="probe", consumer_id="c1")
    consumer.ensure_group()
    consumer.retry_due()
    probe["fail_sku"] = "BAD"
    xadd(redis_client, stream, stock_added("OK"))
    xadd(redis_client, stream, stock_added("BAD"))
    batch = consumer.read_new(block=False, stop=threading.Event())
    assert consumer.process(batch, ack_with_next_read=True) == 1
    assert [item["message_id"] for item in redis_client.xpending_range(stream, "probe", "-", "+", 10)] == [batch[1].id]


def test_a_chunk_with_more_inbox_rows_than_one_statement_binds_is_inserted_in_several(redis_client, stream, probe):
    """On SQLite a chunk's inbox rows go in multi-row statements of at most max_query_params values each; an
    event applied before is recognised in any of them (here in the second), and skipped alone."""
    consumer = StreamConsumer(name="probe", consumer_id="c1", count=400)
    consumer.ensure_group()
    envelopes = [stock_added(f"M-{n}") for n in range(400)]
    for envelope in envelopes:
        xadd(redis_client, stream, envelope)
    ProcessedEvent.objects.create(consumer="probe", event_id=envelopes[-1].id)  # applied before: a redelivery
    consumer.chunks.size = 400  # one chunk for the whole batch
    batch = consumer.read_new(block=False, stop=threading.Event())
    assert consumer.process(batch) == 400
    assert len(probe["calls"]) == 399 and envelopes[-1].id not in probe["calls"]
    assert ProcessedEvent.objects.filter(consumer="probe").count() == 400
