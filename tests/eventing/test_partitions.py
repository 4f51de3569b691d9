"""Partitions: their names and hash tags, routing by aggregate, and the system check for a Redis Cluster."""

import json
import os
import subprocess
import sys
import zlib
from collections import defaultdict
from pathlib import Path

import pytest
from redis.crc import key_slot

from eventing.consumer.group import GroupIO
from eventing.consumer.health import health_key
from eventing.consumer.runner import StreamConsumer
from eventing.models import OutboxEvent
from eventing.transport.streams import (
    bus_tag,
    check_partitions,
    dead_letter_stream,
    hash_tag,
    is_stream_of_bus,
    partition_of,
    partition_streams,
    retry_stream,
    run_id_key,
    stream_for,
)
from inventory.services import stock_item_create
from orders.models import Order
from orders.services import OrderLineIn, order_cancel, order_place
from tests.helpers import pump

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_URL = "redis+cluster://127.0.0.1:7101/0"


def slot(key: str) -> int:
    return key_slot(key.encode())


def test_one_partition_is_the_stream_itself_and_more_are_each_their_own_hash_tag(settings):
    settings.EVENTING_STREAM = "orders-bus"
    assert partition_streams(partitions=1) == ["orders-bus"]
    names = partition_streams(partitions=4)
    assert names == ["{orders-bus:p0}", "{orders-bus:p1}", "{orders-bus:p2}", "{orders-bus:p3}"]
    assert [hash_tag(name) for name in names] == ["orders-bus:p0", "orders-bus:p1", "orders-bus:p2", "orders-bus:p3"]
    # A stream already written with braces (as on a cluster with one partition) is not tagged twice.
    settings.EVENTING_STREAM = "{orders-bus}"
    assert partition_streams(partitions=1) == ["{orders-bus}"]
    assert partition_streams(partitions=2) == ["{orders-bus:p0}", "{orders-bus:p1}"]
    assert all(is_stream_of_bus(name) for name in ["{orders-bus}", "orders-bus", *partition_streams(partitions=3)])
    assert not is_stream_of_bus("other-bus") and not is_stream_of_bus("{orders-bus:p1}:retry:orders")


def test_every_key_kept_beside_a_partition_shares_its_slot(settings):
    settings.EVENTING_STREAM = "orders-bus"
    settings.EVENTING_PARTITIONS = 8
    slots = set()
    for partition in partition_streams():
        io = GroupIO(stream=partition, group="inventory", consumer_id="c-1", count=10, block_ms=5)
        related = [*io.streams, dead_letter_stream(partition), io.failures_key, run_id_key(partition)]
        assert {slot(key) for key in related} == {slot(partition)}, related
        assert dead_letter_stream(retry_stream(partition, "orders")) == dead_letter_stream(partition)
        slots.add(slot(partition))
    assert len(slots) == 8  # the partitions themselves spread over slots
    # The consumers' health records are the bus's, not a partition's: one tag for all, so one MGET reads them.
    assert len({slot(health_key(stream="orders-bus", group=g, consumer_id=c)) for g in "ab" for c in "xy"}) == 1
    assert bus_tag() == "{orders-bus}"


def test_routing_is_a_crc32_of_the_aggregate_id_whatever_the_process():
    assert partition_of("order-1", partitions=7) == zlib.crc32(b"order-1") % 7
    script = (
        "from eventing.transport.streams import partition_of; "
        "print([partition_of(f'a-{i}', partitions=5) for i in range(20)])"
    )
    runs = {
        subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": seed},
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(runs) == 1  # Python's salted hash() would differ between the two processes


@pytest.mark.django_db(transaction=True)
def test_all_events_of_an_aggregate_land_in_one_partition_in_order_and_aggregates_spread(
    settings, redis_client, stream
):
    settings.EVENTING_PARTITIONS = 4
    for n in range(4):
        stock_item_create(sku=f"S-{n}", name=f"item {n}", quantity=50)
    pump()
    orders = [order_place(customer_id=f"c-{n % 3}", lines=[OrderLineIn(f"S-{n % 4}", 1)]) for n in range(24)]
    pump()
    for order in orders[::5]:
        order_cancel(order_id=str(order.id))
    pump()

    seen: dict[str, list[tuple[str, int]]] = defaultdict(list)  # aggregate -> [(partition, version), ...]
    for partition in partition_streams():
        for _entry_id, fields in redis_client.xrange(partition):
            envelope = json.loads(fields["data"])
            seen[f"{envelope['aggregate_type']}:{envelope['aggregate_id']}"].append(
                (partition, envelope["aggregate_version"])
            )
    assert redis_client.xlen(stream) == 0  # the base stream itself is no partition when there are several
    assert len(seen) == 4 + 24 * 2  # stock items, orders and their reservations
    for aggregate, entries in seen.items():
        aggregate_id = aggregate.split(":", 1)[1]
        assert {partition for partition, _ in entries} == {stream_for(aggregate_id)}, aggregate
        versions = [version for _, version in entries]
        assert versions == sorted(versions), (aggregate, versions)  # in commit order
    assert {partition for entries in seen.values() for partition, _ in entries} == set(partition_streams())
    assert set(OutboxEvent.objects.values_list("stream", flat=True)) == set(partition_streams())
    assert Order.objects.filter(status="CANCELLED").count() == len(orders[::5])
    assert not Order.objects.filter(status="PENDING").exists()


def test_the_check_refuses_an_untagged_stream_on_a_cluster_and_warns_about_the_cache(settings):
    settings.REDIS_URL = CLUSTER_URL
    settings.CACHE_URL = ""
    settings.EVENTING_STREAM = "events-stream"
    settings.EVENTING_PARTITIONS = 1
    assert [message.id for message in check_partitions()] == ["eventing.E004", "eventing.W001"]

    settings.EVENTING_STREAM = "{events-stream}"
    settings.CACHE_URL = "redis://127.0.0.1:6380/0"
    assert check_partitions() == []
    settings.EVENTING_STREAM = "events-stream"
    settings.EVENTING_PARTITIONS = 4  # every partition carries its own tag
    assert check_partitions() == []

    settings.REDIS_URL = "redis://127.0.0.1:6380/0"  # one Redis needs no tags
    settings.EVENTING_PARTITIONS = 1
    assert check_partitions() == []
    settings.EVENTING_PARTITIONS = 0
    assert [message.id for message in check_partitions()] == ["eventing.E003"]


def cache_backend(**env: str) -> subprocess.CompletedProcess[str]:
    script = "import django; django.setup(); from django.conf import settings; print(settings.CACHES['default'])"
    environ = {key: value for key, value in os.environ.items() if key != "CACHE_URL"}
    return subprocess.run(
        [sys.executable, "-c", script],
        env={**environ, "DJANGO_SETTINGS_MODULE": "tests.settings", **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_on_a_cluster_the_throttle_cache_is_a_standalone_redis_or_each_process_memory():
    assert "LocMemCache" in cache_backend(REDIS_URL=CLUSTER_URL).stdout
    with_cache = cache_backend(REDIS_URL=CLUSTER_URL, CACHE_URL="redis://127.0.0.1:6380/0").stdout
    assert "RedisCache" in with_cache and "127.0.0.1:6380" in with_cache
    refused = cache_backend(REDIS_URL=CLUSTER_URL, CACHE_URL=CLUSTER_URL)
    assert refused.returncode != 0 and "CACHE_URL must name a standalone Redis" in refused.stderr


def test_a_stream_gone_under_the_consumer_costs_no_crash_and_gets_its_group_again(redis_client, stream):
    # Its master came back without its data: XINFO CONSUMERS (forgetting idle consumers) answers "no such key",
    # not NOGROUP. Found by F10: the orders consumer died of it.
    consumer = StreamConsumer(name="orders", consumer_id="c1", block_ms=5)
    consumer.ensure_group()
    redis_client.delete(*consumer.streams)

    assert consumer.partitions.forget_idle_consumers(0) == []

    assert {g["name"] for g in redis_client.xinfo_groups(consumer.streams[0])} == {"orders"}
