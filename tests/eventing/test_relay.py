"""The relay's pipelined XADDs (eventing.transport.client.send_pipelined): one write per batch, every reply
read, the connection left in step after an error reply and taken again after a dropped connection; with
tracing on, the client's own pipeline, which the Redis instrumentation spans."""

import uuid

import pytest
import redis
from django.conf import settings
from opentelemetry.trace import SpanKind
from redis.backoff import NoBackoff
from redis.retry import Retry

from eventing.models import OutboxEvent
from eventing.transport.client import send_pipelined
from eventing.transport.relay import publish_pending
from inventory.services import stock_item_create


def xadd(stream: str, n: int) -> tuple[str, ...]:
    return ("XADD", stream, "*", "n", str(n))


def test_an_error_reply_is_raised_after_every_reply_is_read_and_the_connection_stays_in_step(redis_client, stream):
    wrong_type = f"{stream}-a-string"
    redis_client.set(wrong_type, "x")

    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        send_pipelined(redis_client, [xadd(stream, 1), xadd(wrong_type, 2), xadd(stream, 3)])

    # The commands around the refused one ran, and the next replies are the next commands' own.
    assert [fields["n"] for _, fields in redis_client.xrange(stream)] == ["1", "3"]
    assert redis_client.xlen(stream) == 2
    send_pipelined(redis_client, [xadd(stream, 4)])
    assert redis_client.xlen(stream) == 2 + 1


def test_a_batch_goes_through_a_connection_the_server_dropped(stream):
    name = f"relay-test-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(settings.REDIS_URL, client_name=name, decode_responses=True)
    admin = redis.Redis.from_url(settings.REDIS_URL)
    send_pipelined(client, [xadd(stream, 1)])  # the pool now holds a connection
    [entry] = [c for c in admin.client_list() if c["name"] == name]
    admin.client_kill_filter(_id=entry["id"])

    send_pipelined(client, [xadd(stream, 2), xadd(stream, 3)])

    assert [fields["n"] for _, fields in client.xrange(stream)] == ["1", "2", "3"]
    client.close()
    admin.close()


def test_a_connection_lost_while_reading_the_replies_is_retried_by_the_clients_retry_with_the_whole_batch(
    stream, monkeypatch
):
    # The project's clients retry nothing (redis-py's from_url default); a pipeline would retry as this does.
    client = redis.Redis.from_url(settings.REDIS_URL, decode_responses=True, retry=Retry(NoBackoff(), 1))
    send_pipelined(client, [xadd(stream, 0)])
    connection = client.connection_pool.get_connection()
    client.connection_pool.release(connection)
    read = connection.read_response
    lost = []

    def read_once_then_lose(*args, **kwargs):
        if not lost:
            lost.append(read(*args, **kwargs))
            connection.disconnect()
            raise redis.ConnectionError("lost")
        return read(*args, **kwargs)

    monkeypatch.setattr(connection, "read_response", read_once_then_lose)
    send_pipelined(client, [xadd(stream, 1), xadd(stream, 2)])

    # Redis had run both before the connection was lost: both went again (consumers drop such duplicates).
    assert [fields["n"] for _, fields in client.xrange(stream)] == ["0", "1", "2", "1", "2"]
    client.close()


@pytest.mark.django_db(transaction=True)
def test_with_tracing_on_the_relay_publishes_through_the_clients_pipeline_which_is_spanned(
    settings, redis_client, stream, spans
):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there: the row waits for the relay
    stock_item_create(sku="S-1", name="s", quantity=1)
    kwargs = redis_client.connection_pool.connection_kwargs
    settings.REDIS_URL = f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs.get('db', 0)}"
    spans.clear()

    assert publish_pending(client=redis.Redis.from_url(settings.REDIS_URL), batch_size=10, grace_seconds=0) == 1

    assert redis_client.xlen(stream) == 1
    assert not OutboxEvent.objects.filter(published_at__isnull=True).exists()
    redis_spans = [s for s in spans.get_finished_spans() if s.kind is SpanKind.CLIENT and "XADD" in s.name]
    assert redis_spans, [s.name for s in spans.get_finished_spans()]
