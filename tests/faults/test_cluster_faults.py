"""F10: a master of a Redis Cluster without replicas killed under load, restarted from its AOF, then killed
again and restarted without its data (a lost disk). The bus runs on six partitions over three masters of the
test's own, with leases. What the master's partitions lost comes back from the outbox: the relay notices that
master's new run id and re-publishes what was published to its partitions since the last entry that survived
there.

Then, focused: consumers with leases keep applying the partitions of the live masters while the master holding
their member set and some of their leases is down, and take every partition back once it returns."""

import json
import random
import re
import signal
import threading
import time
import uuid
from collections import Counter

import pytest
from django.conf import settings
from django.db import OperationalError, connection

from eventing.consumer.group import read_group
from eventing.consumer.runner import StreamConsumer
from eventing.contract.consumers import handles
from eventing.contract.envelope import Envelope
from eventing.models import ProcessedEvent
from eventing.transport.client import get_redis
from eventing.transport.leases import members_key
from eventing.transport.streams import partition_streams, stream_for
from inventory.events import StockAdded
from orders.models import CatalogItem
from tests.e2e.invariants import check_invariants
from tests.e2e.system import RedisClusterServers, System, wait_for
from tests.e2e.test_order_flow import make_orders
from tests.faults.conftest import report
from tests.helpers import scratch_consumer

STOCK = {"HOT-1": 200, "HOT-2": 150, "COOL-1": 400}
PARTITIONS = 6
CLUSTER_ENV = {
    "EVENTING_PARTITIONS": str(PARTITIONS),
    "EVENTING_TRIM_INTERVAL_SECONDS": "3600",  # nothing trimmed: the streams show what survived
    # Leases on, at their default TTL: the victim holds leases and, for some stream names, the member sets.
}


def republished(system: System) -> int:
    """Events the relay re-published after a restart, from its log."""
    return sum(int(n) for n in re.findall(r"re-published (\d+) event\(s\)", system.log("relay")))


def snapshot(system: System, streams: list[str]) -> dict[str, tuple[int, str]]:
    """(length, last id) of each stream, from one XINFO STREAM each so that the two agree (read by two calls,
    an entry added between them made lost_at_kill -1)."""
    infos = {s: system.redis.xinfo_stream(s) for s in streams}
    return {s: (info["length"], info["last-generated-id"]) for s, info in infos.items()}


def survived(system: System, before: dict[str, tuple[int, str]]) -> int:
    """Entries among those the streams held at ``before`` that are still there."""
    return sum(len(system.redis.xrange(s, "-", last_id)) for s, (_, last_id) in before.items())


def entries(system: System, streams: list[str]) -> int:
    return sum(system.redis.xlen(s) for s in streams)


def acked(system: System, streams: list[str]) -> Counter[str]:
    """Entries of ``streams`` each group has read and acked."""
    done: Counter[str] = Counter()
    for stream in streams:
        for group in system.groups(stream):
            done[group["name"]] += (group["entries-read"] or 0) - group["pending"]
    return done


def place_in_background(system: System, count: int, seed: int) -> tuple[threading.Thread, dict]:
    result: dict = {}
    bodies = make_orders(random.Random(seed), count=count, stock=STOCK)
    thread = threading.Thread(target=lambda: result.setdefault("placed", system.place_orders(bodies, threads=4)))
    thread.start()
    return thread, result


def place_until(system: System, stop: threading.Event, seed: int) -> tuple[threading.Thread, dict]:
    """Orders from 4 threads, a few at a time, until ``stop`` is set: a load that lasts as long as the fault,
    however fast the machine places them (a fixed count could all be placed before the kill)."""
    result: dict = {"placed": []}
    rng = random.Random(seed)

    def place() -> None:
        while not stop.is_set():
            result["placed"] += system.place_orders(make_orders(rng, count=8, stock=STOCK), threads=4)

    thread = threading.Thread(target=place)
    thread.start()
    return thread, result


def test_f10_a_cluster_master_killed_and_restarted_with_and_without_its_data_loses_nothing(redis_cluster, make_system):
    system = make_system(redis_url=redis_cluster.url, env={**CLUSTER_ENV, "CACHE_URL": settings.REDIS_URL})
    victim = redis_cluster.node_of(system.streams[0])
    held = [s for s in system.streams if redis_cluster.node_of(s) is victim]
    others = [s for s in system.streams if s not in held]
    assert held and others
    system.add_stock(STOCK)

    # 1. kill -9 under load; down for three seconds (past the 2 s node timeout: the others mark it failed).
    placing = threading.Event()
    thread, first = place_until(system, placing, seed=10)
    time.sleep(1.5)
    at_kill = snapshot(system, held)
    victim.kill(signal.SIGKILL)
    killed = time.monotonic()
    others_at_kill, acked_at_kill = entries(system, others), acked(system, others)
    time.sleep(3)
    others_flowed = entries(system, others) - others_at_kill  # the live masters' partitions kept taking events
    acked_while_down = acked(system, others) - acked_at_kill  # and the consumers kept applying them
    victim.start()  # from its own directory: the AOF replays, nodes.conf keeps its slots
    redis_cluster.wait_ok()
    back = time.monotonic()
    down_1 = back - killed
    lost_at_kill = sum(n for n, _ in at_kill.values()) - survived(system, at_kill)
    placing.set()
    thread.join(timeout=300)
    assert not thread.is_alive()
    system.wait_settled(timeout=180)
    settled_1 = time.monotonic() - back
    figures_1 = check_invariants(system, first["placed"])
    republished_1 = republished(system)

    # 2. Killed again and back without its data, as from a lost disk: every entry of its partitions is gone.
    thread, second = place_in_background(system, 60, seed=11)
    time.sleep(1)
    wiped = {json.loads(fields["data"])["id"] for s in held for _, fields in system.redis.xrange(s)}
    victim.kill(signal.SIGKILL)
    victim.wipe()
    victim.start()
    redis_cluster.wait_ok()
    back = time.monotonic()
    thread.join(timeout=300)
    system.wait_settled(timeout=180)
    settled_2 = time.monotonic() - back
    figures_2 = check_invariants(system, first["placed"] + second["placed"])
    republished_2 = republished(system) - republished_1

    assert figures_1.lost == figures_2.lost == 0
    assert others_flowed > 0
    assert sum(acked_while_down.values()) > 0
    assert republished_2 >= len(wiped)  # every event its partitions held came back from the outbox
    report(
        "F10 cluster master kill -9",
        partitions=f"{len(held)}/{PARTITIONS} on the victim",
        member_sets_on_victim=redis_cluster.node_of(members_key(group="inventory", base=system.stream)) is victim,
        down_s=round(down_1, 1),
        orders_placed=len(first["placed"]),
        entries_at_kill=sum(n for n, _ in at_kill.values()),
        lost_at_kill=lost_at_kill,
        other_partitions_took_while_down=others_flowed,
        applied_there_while_down=dict(acked_while_down),
        republished=republished_1,
        delivered_twice=figures_1.duplicates_skipped,
        settled_s=round(settled_1, 1),
        lost=figures_1.lost,
    )
    report(
        "F10 cluster master back without data",
        events_wiped=len(wiped),
        republished=republished_2,
        delivered_twice=figures_2.duplicates_skipped,
        settled_s=round(settled_2, 1),
        orders=figures_2.orders,
        lost=figures_2.lost,
    )


PROBE = "lease-probe"
PROBE_TTL_MS = 1500


def probe_stream(cluster: RedisClusterServers) -> str:
    """A stream name whose probe member set lives on a master that holds some of its partitions, not all."""
    for _ in range(100):
        stream = f"lease-probe-{uuid.uuid4().hex[:8]}"
        master = cluster.node_of(members_key(group=PROBE, base=stream))
        on_it = [p for p in partition_streams(stream=stream, partitions=PARTITIONS) if cluster.node_of(p) is master]
        if 0 < len(on_it) < PARTITIONS:
            return stream
    raise AssertionError("no stream name puts the member set beside some partitions")


def one_sku_per_partition(stream: str) -> dict[str, str]:
    """{partition: a sku routed to it}."""
    skus: dict[str, str] = {}
    n = 0
    while len(skus) < PARTITIONS:
        skus.setdefault(stream_for(f"PROBE-{n}", stream=stream, partitions=PARTITIONS), f"PROBE-{n}")
        n += 1
    return skus


@pytest.mark.timeout(120)
@pytest.mark.django_db(transaction=True)
def test_consumers_with_leases_keep_applying_live_masters_partitions_while_one_is_down_and_take_all_back_after(
    redis_cluster, settings, monkeypatch
):
    stream = probe_stream(redis_cluster)
    settings.REDIS_URL = redis_cluster.url
    settings.EVENTING_STREAM = stream
    settings.EVENTING_PARTITIONS = PARTITIONS
    settings.EVENTING_LEASE_TTL_MS = PROBE_TTL_MS
    settings.EVENTING_MAX_BACKOFF_SECONDS = 0.5
    probe = scratch_consumer(monkeypatch, PROBE)

    @handles(probe, StockAdded)
    def apply_in_order(event: StockAdded, envelope: Envelope) -> None:
        """The last version applied per sku, and any event that does not follow it (as F11's sequencer)."""
        row = CatalogItem.objects.select_for_update().filter(sku=f"last:{event.sku}").first()
        last = int(row.name) if row else 0
        if envelope.aggregate_version != last + 1:
            CatalogItem.objects.create(
                sku=f"violation:{uuid.uuid4().hex[:12]}",
                name=f"{event.sku} v{envelope.aggregate_version} after v{last}",
            )
        CatalogItem.objects.update_or_create(
            sku=f"last:{event.sku}", defaults={"name": str(max(last, envelope.aggregate_version))}
        )

    victim = redis_cluster.node_of(members_key(group=PROBE, base=stream))
    skus = one_sku_per_partition(stream)
    dead = {p for p in skus if redis_cluster.node_of(p) is victim}
    client = get_redis()
    published: Counter[str] = Counter()

    def publish(partitions: set[str]) -> None:
        for partition in sorted(partitions):
            sku = skus[partition]
            published[sku] += 1
            envelope = Envelope.wrap(
                StockAdded(sku=sku, name=sku, quantity=1, on_hand=published[sku], reserved=0),
                aggregate_version=published[sku],
            )
            client.xadd(partition, {"type": envelope.type, "data": envelope.to_json()})

    def applied() -> dict[str, int]:
        """The last version applied per sku. While a consumer thread writes, the tests' in-memory SQLite (one
        cache shared by the threads' connections) answers a read "table is locked" at once rather than
        waiting: such a read is tried again, for up to 5 s."""
        deadline = time.monotonic() + 5
        while True:
            try:
                rows = CatalogItem.objects.filter(sku__startswith="last:")
                return {r.sku.removeprefix("last:"): int(r.name) for r in rows}
            except OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(0.01)

    def caught_up(partitions: set[str]) -> bool:
        versions = applied()
        return all(versions.get(skus[p]) == published[skus[p]] for p in partitions)

    consumers = [StreamConsumer(name=PROBE, consumer_id=f"probe-{i}", block_ms=50) for i in range(2)]

    def held() -> list[set[str]]:
        """The partitions each consumer may apply now: leases held and not past their deadline by its clock."""
        return [set(c.partitions.leases.holding()) for c in consumers]

    def run(consumer: StreamConsumer) -> None:
        try:
            consumer.run(stop=stop)
        finally:
            connection.close()

    stop = threading.Event()
    threads = [threading.Thread(target=run, args=(c,)) for c in consumers]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: set().union(*held()) == set(skus) and sum(map(len, held())) == PARTITIONS,
                 timeout=30, what="the two consumers to split every partition")  # fmt: skip
        publish(set(skus))
        wait_for(lambda: caught_up(set(skus)), timeout=30, what="every partition's first event applied")

        victim.kill(signal.SIGKILL)  # the member set and the leases of its partitions go with it
        killed = time.monotonic()
        # A lease renewed just before the kill expires a TTL after it: by then no consumer may act on it (the
        # margin is the polling's, not the consumers').
        wait_for(lambda: not set().union(*held()) & dead, timeout=PROBE_TTL_MS / 1000 + 0.2,
                 what="the leases on the dead master to be treated as lost within a TTL")  # fmt: skip
        dropped_s = time.monotonic() - killed
        live = set(skus) - dead
        publish(live)
        wait_for(lambda: caught_up(live), timeout=15, what="the live masters' partitions applied while one is down")
        time.sleep(2 * PROBE_TTL_MS / 1000)  # past any lease not renewed since the kill
        assert set().union(*held()) == live  # renewed without the member set, no partition of the dead master
        publish(live)
        wait_for(lambda: caught_up(live), timeout=15, what="the live masters' partitions applied two TTLs later")
        assert all(thread.is_alive() for thread in threads)
        assert all(versions == 1 for sku, versions in applied().items() if sku in {skus[p] for p in dead})
        down_s = time.monotonic() - killed

        victim.start()
        redis_cluster.wait_ok()
        back = time.monotonic()
        publish(set(skus))
        wait_for(lambda: caught_up(set(skus)), timeout=30, what="every partition applied after the master is back")
        wait_for(lambda: set().union(*held()) == set(skus) and sum(map(len, held())) == PARTITIONS,
                 timeout=30, what="every partition held again, each by one consumer")  # fmt: skip
        recovered_s = time.monotonic() - back
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    assert not CatalogItem.objects.filter(sku__startswith="violation:").exists()
    assert ProcessedEvent.objects.filter(consumer=PROBE).count() == sum(published.values())  # each once
    report(
        "F10 leases while a master is down",
        partitions=f"{len(dead)}/{PARTITIONS} and the member set on the victim",
        leases_dropped_after_s=round(dropped_s, 2),
        down_s=round(down_s, 1),
        applied_while_down=2 * len(live),
        recovered_s=round(recovered_s, 1),
        events=sum(published.values()),
    )


def test_a_partition_on_a_live_master_is_read_while_the_clients_first_node_is_down(redis_cluster, settings):
    """redis-py asks its default node (the URL's) which keys an XREADGROUP names before routing it: with that
    node down no partition could be read, on whichever master it lived. Found by F10 above, when a transient
    error sent a consumer back to re-reading its pending entries while the member set's master was down."""
    settings.REDIS_URL = redis_cluster.url
    first = redis_cluster.nodes[0]
    stream = next(
        name
        for name in (f"read-probe-{uuid.uuid4().hex[:8]}" for _ in range(100))
        if redis_cluster.node_of(name) is not first
    )
    client = get_redis(decode_responses=False)  # as the consumers read: bytes
    client.xgroup_create(stream, "g", id="0", mkstream=True)
    client.xadd(stream, {"k": "v"})

    first.kill(signal.SIGKILL)

    assert [entry.fields for entry in read_group(client, "g", "c1", {stream: ">"}, count=10, block_ms=None)] == [
        {b"k": b"v"}
    ]
    assert [entry.fields for entry in read_group(client, "g", "c1", {stream: "0"}, count=10, block_ms=None)] == [
        {b"k": b"v"}
    ]  # its own pending entries, as a consumer re-reads them at start
