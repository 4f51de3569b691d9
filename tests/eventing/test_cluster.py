"""The bus on a real Redis Cluster (three masters, `scripts/services start redis-cluster`), split into four
partitions: publishing, consuming, claiming a dead consumer's entries, trimming, retries, dead letters and
their retry, re-publishing after a restart, the status and the catch-up — and never a CROSSSLOT, neither
refused by a master nor by the client before sending."""

import io
import json
import os
import threading
import time

import pytest
from django.core.management import call_command
from redis.cluster import RedisCluster

from eventing.consumer.partitions import CLUSTER_IDLE_BLOCK_MS
from eventing.consumer.runner import StreamConsumer
from eventing.contract import consumers as registry
from eventing.contract.envelope import Envelope
from eventing.models import DeadLetter, OutboxEvent, ProcessedEvent
from eventing.readside.event_log import logged_before
from eventing.services import dead_letter_retry
from eventing.transport import relay
from eventing.transport.client import ServerStart, get_redis
from eventing.transport.relay import _check_restart, publish_pending, run_id_key
from eventing.transport.streams import dead_letter_stream, partition_streams, retry_stream, stream_for
from inventory.events import StockAdded
from inventory.services import stock_item_create
from orders.models import CatalogItem, Order
from orders.read_models import OrderView
from orders.services import OrderLineIn, order_cancel, order_place
from tests.e2e.system import run_services
from tests.eventing.test_consumer import counting, live_read_while_arriving
from tests.helpers import ALL_CONSUMERS, pump, scratch_consumer

pytestmark = pytest.mark.django_db(transaction=True)

CLUSTER_PORT = int(os.environ.get("REDIS_CLUSTER_PORT", "7101"))
PARTITIONS = 4


@pytest.fixture(scope="session")
def cluster_url() -> str:
    """The local cluster, started when it is not running (a second start is a no-op)."""
    run_services("start", "redis-cluster", timeout=120)
    return f"redis+cluster://127.0.0.1:{CLUSTER_PORT}/0"


@pytest.fixture
def redis_client(settings, cluster_url):  # the suite's client fixture, here on the cluster (the `stream` fixture too)
    settings.REDIS_URL = cluster_url
    settings.EVENTING_PARTITIONS = PARTITIONS
    return get_redis()


def crossslot_refusals(client: RedisCluster) -> int:
    stats = client.info("errorstats", target_nodes=RedisCluster.ALL_NODES)
    return sum(node.get("errorstat_CROSSSLOT", {}).get("count", 0) for node in stats.values())


@pytest.fixture(autouse=True)
def no_crossslot(redis_client, caplog):
    before = crossslot_refusals(redis_client)
    yield
    assert crossslot_refusals(redis_client) == before, "a master refused a command whose keys span slots"
    assert "CROSSSLOT" not in caplog.text
    assert "same key slot" not in caplog.text  # redis-py's own refusal, before sending


@pytest.fixture(autouse=True)
def fast_retries(settings):
    settings.EVENTING_RETRY_BASE_MS = 1
    settings.EVENTING_RETRY_MAX_MS = 5


def masters_of(client: RedisCluster, streams: list[str]) -> set[str]:
    return {client.get_node_from_key(stream).name for stream in streams}


def entries_by_partition(client) -> dict[str, int]:
    return {partition: client.xlen(partition) for partition in partition_streams()}


def stock(*skus: str, quantity: int = 20) -> None:
    for sku in skus:
        stock_item_create(sku=sku, name=f"item {sku}", quantity=quantity)


SKUS = ("A-1", "B-2", "C-3", "D-4", "E-5", "F-6")


def test_orders_flow_through_partitions_spread_over_the_masters(redis_client, stream):
    assert len(masters_of(redis_client, partition_streams())) >= 2
    stock(*SKUS)
    pump()
    orders = [order_place(customer_id=f"c-{n % 3}", lines=[OrderLineIn(SKUS[n % 6], 2)]) for n in range(18)]
    pump()
    order_cancel(order_id=str(orders[0].id))
    pump()

    statuses = dict(Order.objects.values_list("id", "status"))
    assert sorted(set(statuses.values())) == ["CANCELLED", "CONFIRMED"]
    assert {str(oid): status for oid, status in statuses.items()} == {
        view.pk: view.status for view in OrderView.objects.all()
    }
    used = [partition for partition, length in entries_by_partition(redis_client).items() if length]
    assert len(used) == PARTITIONS  # six items and eighteen orders reach every partition ...
    assert len(masters_of(redis_client, used)) >= 2  # ... on more than one master
    for partition in used:  # every group read and acked everything, on every partition
        assert {group["name"]: (group["lag"], group["pending"]) for group in redis_client.xinfo_groups(partition)} == {
            name: (0, 0) for name in ALL_CONSUMERS
        }
    assert ProcessedEvent.objects.filter(consumer="inventory").count() == 18 + 1  # created ×18, cancelled


def test_the_entries_of_a_dead_consumer_are_claimed_on_every_partition(settings, redis_client, stream):
    settings.EVENTING_CLAIM_IDLE_MS = 100
    settings.EVENTING_LEASE_TTL_MS = 0  # the reclaim of idle entries itself (with leases, a new owner takes them)
    stock(*SKUS)
    dead = StreamConsumer(name="orders", consumer_id="dead-1", block_ms=5)
    dead.ensure_group()
    delivered = dead.read(">")  # delivered to dead-1 on every partition that has an entry, then it died
    assert len(delivered) == len(SKUS)
    assert len({entry.stream for entry in delivered}) >= 2
    time.sleep(0.2)

    alive = StreamConsumer(name="orders", consumer_id="alive-1", block_ms=5)
    assert alive.claim_stale() == len(SKUS)

    assert CatalogItem.objects.count() == len(SKUS)
    for partition in partition_streams():
        assert redis_client.xpending(partition, "orders")["pending"] == 0
    time.sleep(0.2)
    alive.claim_stale()  # dead-1 holds nothing and has been idle: forgotten on every partition
    for partition in partition_streams():
        assert {c["name"] for c in redis_client.xinfo_consumers(partition, "orders")} <= {"alive-1"}


def test_trimming_covers_every_partition_and_keeps_what_a_group_has_not_read(redis_client, stream):
    stock(*SKUS)
    for name in ("inventory", "projections"):
        StreamConsumer(name=name, block_ms=5).run_until_idle()
    StreamConsumer(name="orders", block_ms=5).ensure_group()  # has read nothing
    out = io.StringIO()
    call_command("trim_streams", stdout=out)
    assert sum(entries_by_partition(redis_client).values()) == len(SKUS)

    StreamConsumer(name="orders", block_ms=5).run_until_idle()
    call_command("trim_streams", stdout=out)
    assert sum(entries_by_partition(redis_client).values()) == 0
    assert all(f"{partition}: trimmed" in out.getvalue() for partition in partition_streams())


@pytest.fixture
def probe(monkeypatch):
    """A consumer 'probe' whose STOCK_ADDED handler stores a 'probe:<sku>' catalog item, failing for POISON skus."""
    probe = scratch_consumer(monkeypatch, "probe")
    state = {"calls": 0, "fail": True}

    @registry.handles(probe, StockAdded)
    def store(event: StockAdded, envelope: Envelope) -> None:
        state["calls"] += 1
        if state["fail"] and event.sku.startswith("POISON"):
            raise ValueError("handler bug")
        CatalogItem.objects.create(sku=f"probe:{event.sku}", name=event.name)

    return state


def test_retries_dead_letters_and_their_retry_stay_in_the_partition_of_their_event(
    settings, redis_client, stream, probe
):
    settings.EVENTING_MAX_ATTEMPTS = 3
    stock("POISON-1", *SKUS)
    StreamConsumer(name="probe", block_ms=5).run_until_idle()

    partition = stream_for("POISON-1")
    dead = DeadLetter.objects.get()
    assert (dead.reason, dead.attempts, dead.stream) == ("max attempts", 3, partition)
    assert CatalogItem.objects.filter(sku__startswith="probe:").count() == len(SKUS)  # the others went through
    [(copy_id, fields)] = redis_client.xrange(dead_letter_stream(partition))
    assert (copy_id, fields["dead_letter_stream"]) == (dead.dead_letter_entry_id, partition)
    assert not redis_client.exists(f"eventing:failures:{partition}:probe")  # forgotten once dead-lettered

    probe["fail"] = False  # the cause is fixed
    [result] = dead_letter_retry(dead_letters=[dead], actor="tester")
    assert result.done and retry_stream(partition, "probe") in result.message
    StreamConsumer(name="probe", block_ms=5).run_until_idle()
    assert CatalogItem.objects.filter(sku="probe:POISON-1").count() == 1
    assert redis_client.xpending(retry_stream(partition, "probe"), "probe")["pending"] == 0


def test_the_relay_publishes_partition_by_partition_and_republishes_only_what_a_restarted_master_held(
    settings, redis_client, stream, monkeypatch
):
    settings.EVENTING_REPUBLISH_MARGIN_SECONDS = 0
    settings.REDIS_URL = "redis+cluster://127.0.0.1:1/0"  # nothing listens: every row stays unpublished
    stock(*SKUS)
    settings.REDIS_URL = f"redis+cluster://127.0.0.1:{CLUSTER_PORT}/0"
    assert OutboxEvent.objects.filter(published_at__isnull=True).count() == len(SKUS)
    assert publish_pending(client=redis_client, batch_size=100, grace_seconds=0) == len(SKUS)
    before = entries_by_partition(redis_client)
    assert all(before.values())

    # The relay has seen every partition's master; then the one holding A-1's partition came back empty, now.
    lost = stream_for("A-1")
    for partition in partition_streams():
        redis_client.set(
            run_id_key(partition), "the-run-before" if partition == lost else _run_id(redis_client, partition)
        )
    redis_client.delete(lost)
    real_starts = relay.server_starts
    monkeypatch.setattr(
        relay,
        "server_starts",
        lambda client, keys: {
            key: ServerStart(start.run_id, int(time.time() * 1000)) if key == lost else start
            for key, start in real_starts(client, keys).items()
        },
    )
    _check_restart(redis_client, batch_size=100)

    after = entries_by_partition(redis_client)
    assert after[lost] == OutboxEvent.objects.filter(stream=lost).count() == before[lost]  # every kept row, once
    assert {p: n for p, n in after.items() if p != lost} == {p: n for p, n in before.items() if p != lost}
    assert redis_client.get(run_id_key(lost)) == _run_id(redis_client, lost)


def _run_id(client: RedisCluster, key: str) -> str:
    return client.info("server", target_nodes=client.get_node_from_key(key))["run_id"]


def test_status_health_and_the_drain_check_cover_every_partition(redis_client, stream):
    stock(*SKUS)
    consumers = {name: StreamConsumer(name=name, consumer_id=f"{name}-1", block_ms=5) for name in ALL_CONSUMERS}
    for consumer in consumers.values():
        consumer.run_until_idle()  # which ends by deleting its health record, as a stopping consumer does
        consumer.ready = False
        consumer.set_ready(True)
    out = io.StringIO()
    call_command("streams", "--json", "--drained", "--min-alive", "1", stdout=out)
    status = json.loads(out.getvalue())
    assert [s["name"] for s in status["streams"]] == partition_streams()
    assert sum(s["length"] for s in status["streams"]) == len(SKUS)
    assert all(g["alive"] == 1 for s in status["streams"] for g in s["groups"])
    health = io.StringIO()
    call_command("consumer_health", stdout=health)
    assert all(f"{name} {name}-1: ready" in health.getvalue() for name in ALL_CONSUMERS)

    stock("LATE-1")  # published, not read yet: the bus is no longer drained
    with pytest.raises(Exception, match="not yet read"):
        call_command("streams", "--drained", stdout=io.StringIO())


def test_a_consumer_started_from_the_beginning_catches_up_on_every_partition(redis_client, stream, monkeypatch):
    stock(*SKUS)
    pump()
    call_command("trim_streams", stdout=io.StringIO())  # the history is gone from every partition ...
    stock("LATE-1", "LATE-2")  # ... but for what came after the trim
    pump()
    counter = scratch_consumer(monkeypatch, "counter")
    seen: list[str] = []

    @registry.handles(counter, registry.ALL_EVENTS, idempotent=True)
    def count(event, envelope: Envelope) -> None:
        seen.append(envelope.id)

    late = StreamConsumer(name="counter", block_ms=5)
    from_log = late.catch_up_from_log(threading.Event(), history=logged_before)
    late.run_until_idle()

    assert from_log == len(SKUS)
    assert sorted(seen) == sorted(str(event_id) for event_id in OutboxEvent.objects.values_list("event_id", flat=True))


def test_an_idle_live_read_without_leases_makes_one_round_then_blocks_and_what_it_finds_next_lingers(
    settings, redis_client, stream, monkeypatch
):
    """Without leases, an idle read is one round of non-blocking reads, one per partition, then one blocking
    read of one partition (P + 1 reads, not a second round first). An entry found on another partition by the
    round after that block ran out came after a wait, so its batch lingers for more."""
    settings.EVENTING_LEASE_TTL_MS = 0
    settings.EVENTING_LINGER_MS_BY_CONSUMER = {"inventory": 300}
    consumer = StreamConsumer(name="inventory", consumer_id="c1", block_ms=5000)
    consumer.ensure_group()
    assert consumer.partitions.leases is None and not consumer.partitions.one_call
    reads = [counting(monkeypatch, io, "read") for io in consumer.partitions.ios]

    assert consumer.read_new(block=True, stop=threading.Event()) == []
    assert sorted(sum((reads_of_one for reads_of_one in reads), []), key=lambda call: call["block"]) == [
        *[{"block": False}] * PARTITIONS,
        {"block": True, "block_ms": CLUSTER_IDLE_BLOCK_MS},
    ]
    partitions = [io.stream for io in consumer.partitions.ios]
    blocked_on = next(io.stream for io, calls in zip(consumer.partitions.ios, reads, strict=True) if len(calls) == 2)
    blocks_next = partitions[(partitions.index(blocked_on) + 1) % PARTITIONS]  # taken in turn

    # Neither comes where the next read blocks: that block runs out, and the round after it finds the first.
    others = [partition for partition in partitions if partition not in (blocked_on, blocks_next)]
    # Blocks of at most 0.1 s on one partition, in turn: two seconds at most.
    arrive = (0.05, others[0], "L-1"), (0.25, others[1], "L-2")
    batch = live_read_while_arriving(consumer, redis_client, *arrive, tries=20)
    assert sorted(entry.stream for entry in batch) == sorted(others[:2])


def test_one_partition_on_a_cluster_is_the_stream_itself_written_with_its_hash_tag(settings, redis_client, stream):
    settings.EVENTING_PARTITIONS = 1
    settings.EVENTING_STREAM = tagged = f"{{{stream}}}"
    assert partition_streams() == [tagged]
    stock(*SKUS)
    pump()
    orders = [order_place(customer_id="c-1", lines=[OrderLineIn(sku, 1)]) for sku in SKUS]
    pump()
    assert set(Order.objects.filter(pk__in=[o.pk for o in orders]).values_list("status", flat=True)) == {"CONFIRMED"}
    assert redis_client.xlen(tagged) == len(SKUS) * 4  # stock added, and per order created, reserved, confirmed
    call_command("trim_streams", stdout=io.StringIO())
    assert redis_client.xlen(tagged) == 0
