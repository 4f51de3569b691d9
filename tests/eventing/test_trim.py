import io

import pytest
from django.core.management import CommandError, call_command

from eventing.consumer.runner import StreamConsumer
from eventing.transport.trim import safe_min_id, trim_stream
from tests.eventing.test_consumer import stock_added, xadd

pytestmark = pytest.mark.django_db(transaction=True)


def fill(redis_client, stream, n: int) -> list[str]:
    return [xadd(redis_client, stream, stock_added(f"T-{i}")) for i in range(n)]


def test_nothing_is_trimmed_that_a_group_has_not_read(redis_client, stream):
    ids = fill(redis_client, stream, 5)
    StreamConsumer(name="inventory", block_ms=5).run_until_idle()  # reads and acks all
    StreamConsumer(name="orders", block_ms=5).ensure_group()  # has read nothing

    assert trim_stream(redis_client, stream) == 0
    assert [e for e, _ in redis_client.xrange(stream)] == ids


def test_entries_every_group_acked_are_trimmed_and_pending_ones_kept(redis_client, stream):
    ids = fill(redis_client, stream, 6)
    StreamConsumer(name="inventory", block_ms=5).run_until_idle()
    orders = StreamConsumer(name="orders", consumer_id="o-1", block_ms=5, count=4)
    orders.ensure_group()
    delivered = orders.read(">")  # four delivered to orders ...
    orders.process(delivered[:2])  # ... two acked, two still pending

    assert safe_min_id(redis_client, stream) == ids[2]
    assert trim_stream(redis_client, stream) == 2
    assert [e for e, _ in redis_client.xrange(stream)] == ids[2:]


def test_a_stream_without_groups_is_left_alone(redis_client, stream):
    fill(redis_client, stream, 3)
    assert trim_stream(redis_client, stream) == 0
    assert redis_client.xlen(stream) == 3


def test_trim_streams_command_reports_what_it_trimmed(redis_client, stream):
    fill(redis_client, stream, 3)
    for name in ("inventory", "orders", "projections"):
        StreamConsumer(name=name, block_ms=5).run_until_idle()
    out = io.StringIO()
    call_command("trim_streams", stdout=out)
    assert f"{stream}: trimmed 3 entries" in out.getvalue()
    assert redis_client.xlen(stream) == 0


def test_consumer_health_reports_ready_and_not_ready_consumers(stream):
    consumer = StreamConsumer(name="orders", consumer_id="h-1", block_ms=5)
    consumer.set_ready(True)
    out = io.StringIO()
    call_command("consumer_health", "orders", stdout=out)
    assert "orders h-1: ready" in out.getvalue()

    consumer.set_ready(False, "OperationalError: database is locked")
    with pytest.raises(CommandError, match="not ready"):
        call_command("consumer_health", "orders", stdout=io.StringIO())
    with pytest.raises(CommandError, match="no consumer"):
        call_command("consumer_health", "nobody", stdout=io.StringIO())
