import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pytest
from django.db import connection, transaction
from django.utils import timezone

from eventing.contract.errors import EventError
from eventing.models import OutboxEvent
from eventing.transport.client import get_redis
from eventing.transport.relay import BackgroundMarks, background_marks, publish_pending
from inventory.services import stock_item_create
from inventory.signals import stock_added

ROOT = Path(__file__).resolve().parents[2]


def stream_entries(redis_client, stream):
    return redis_client.xrange(stream)


@pytest.mark.django_db(transaction=True)
def test_a_committed_change_is_published_after_commit_with_the_stream_fields(redis_client, stream):
    stock_item_create(sku="A-1", name="Thing", quantity=5)

    [(entry_id, fields)] = stream_entries(redis_client, stream)
    assert set(fields) == {"type", "data", "timestamp"}
    assert fields["type"] == "STOCK_ADDED"
    envelope = json.loads(fields["data"])
    assert envelope["aggregate_id"] == "A-1"
    assert envelope["data"]["on_hand"] == 5
    row = OutboxEvent.objects.get()
    # The row, written by one INSERT, reads back through the ORM as what was sent.
    assert str(row.event_id) == envelope["id"]
    assert (row.event_type, row.stream, row.payload) == ("STOCK_ADDED", stream, fields["data"])
    assert row.occurred_at == datetime.fromisoformat(envelope["occurred_at"])
    assert fields["timestamp"] == row.occurred_at.isoformat()
    assert row.published_at is not None


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_change_leaves_no_event(redis_client, stream):
    with pytest.raises(RuntimeError), transaction.atomic():
        stock_item_create(sku="A-1", name="Thing", quantity=5)
        raise RuntimeError("abort")

    assert OutboxEvent.objects.count() == 0
    assert stream_entries(redis_client, stream) == []


@pytest.mark.django_db(transaction=True)
def test_a_domain_signal_sent_outside_a_transaction_is_refused():
    from inventory.events import StockAdded

    event = StockAdded(sku="A", name="n", quantity=1, on_hand=1, reserved=0)
    with pytest.raises(EventError, match="outside transaction.atomic"):
        stock_added.send(sender=None, event=event, aggregate_version=1)


@pytest.mark.django_db(transaction=True)
def test_events_committed_while_redis_is_down_are_published_by_the_relay(settings, redis_client, stream):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    stock_item_create(sku="A-1", name="Thing", quantity=5)
    stock_item_create(sku="A-2", name="Other", quantity=5)
    assert OutboxEvent.objects.filter(published_at__isnull=True).count() == 2

    settings.REDIS_URL = django_redis_url(redis_client)
    assert publish_pending(client=get_redis(), batch_size=10, grace_seconds=0) == 2

    assert [f["type"] for _, f in stream_entries(redis_client, stream)] == ["STOCK_ADDED", "STOCK_ADDED"]
    assert OutboxEvent.objects.filter(published_at__isnull=True).count() == 0


@pytest.mark.django_db(transaction=True)
def test_the_relay_sends_each_rows_timestamp_as_the_committing_process_would(settings, redis_client, stream):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there: every row waits for the relay
    for sku in ("T-1", "T-2", "T-3"):
        stock_item_create(sku=sku, name="t", quantity=1)
    # The relay reads occurred_at as the database returns it: with and without microseconds.
    first, second, third = OutboxEvent.objects.order_by("id")
    OutboxEvent.objects.filter(pk=second.pk).update(occurred_at=second.occurred_at.replace(microsecond=0))
    OutboxEvent.objects.filter(pk=third.pk).update(occurred_at=third.occurred_at.replace(microsecond=7000))

    settings.REDIS_URL = django_redis_url(redis_client)
    assert publish_pending(client=get_redis(), batch_size=10, grace_seconds=0) == 3

    sent = [f["timestamp"] for _, f in stream_entries(redis_client, stream)]
    assert sent == [row.occurred_at.isoformat() for row in OutboxEvent.objects.order_by("id")]
    assert "." not in sent[1] and sent[2].endswith(".007000+00:00")


@pytest.mark.django_db(transaction=True)
def test_the_relay_marks_published_exactly_the_rows_it_sent(settings, redis_client, stream):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there: every row waits for the relay
    for n in range(5):
        stock_item_create(sku=f"M-{n}", name="m", quantity=1)
    rows = list(OutboxEvent.objects.order_by("id"))
    # A row of a partition set aside is neither sent nor marked; nor is one past the batch.
    OutboxEvent.objects.filter(pk=rows[1].pk).update(stream="elsewhere")

    settings.REDIS_URL = django_redis_url(redis_client)
    assert publish_pending(client=get_redis(), batch_size=3, grace_seconds=0, skip=["elsewhere"]) == 3

    unpublished = set(OutboxEvent.objects.filter(published_at__isnull=True).values_list("pk", flat=True))
    assert unpublished == {rows[1].pk, rows[4].pk}
    sent = [json.loads(f["data"])["id"] for _, f in stream_entries(redis_client, stream)]
    assert sent == [str(row.event_id) for row in (rows[0], rows[2], rows[3])]


def outbox_rows(stream: str, count: int) -> list[OutboxEvent]:
    """``count`` unpublished rows bound for ``stream``, each payload naming its place, in id order."""
    occurred = timezone.now()
    OutboxEvent.objects.bulk_create(
        OutboxEvent(event_id=uuid.uuid4(), event_type="T", stream=stream, payload=f'{{"n": {n}}}', occurred_at=occurred)
        for n in range(count)
    )
    return list(OutboxEvent.objects.order_by("id"))


@contextmanager
def relay_marks() -> Iterator[BackgroundMarks | None]:
    """The marks relay_forever uses on this database: on a thread of their own on PostgreSQL, before each
    publish_pending returns on SQLite."""
    with background_marks() as marks:
        assert isinstance(marks, BackgroundMarks) == (connection.vendor == "postgresql")
        yield marks


@pytest.mark.django_db(transaction=True)
def test_with_the_relays_marks_every_row_is_sent_once_in_order_and_marked(redis_client, stream):
    rows = outbox_rows(stream, 25)

    with relay_marks() as marks:
        # Each read comes while the batch before it may still be being marked on the marks' thread.
        while publish_pending(client=redis_client, batch_size=10, grace_seconds=0, marks=marks) == 10:
            pass

    assert [f["data"] for _, f in stream_entries(redis_client, stream)] == [row.payload for row in rows]
    assert not OutboxEvent.objects.filter(published_at__isnull=True).exists()


@pytest.mark.django_db(transaction=True)
def test_a_row_left_out_of_a_batch_being_marked_is_read_once_that_batch_is_marked(redis_client, stream):
    rows = outbox_rows(stream, 6)
    elsewhere = f"{stream}-elsewhere"
    OutboxEvent.objects.filter(pk__in=[rows[1].pk, rows[3].pk]).update(stream=elsewhere)
    with relay_marks() as marks:
        # Rows 0, 2 and 4 go out; 1 and 3 (a partition set aside) lie inside the id range being marked.
        assert publish_pending(client=redis_client, batch_size=3, grace_seconds=0, skip=[elsewhere], marks=marks) == 3
        # The next reads leave that range out while it is being marked, and take 1 and 3 once it is.
        sent = [publish_pending(client=redis_client, batch_size=3, grace_seconds=0, marks=marks) for _ in range(3)]

    assert sorted(sent) in ([0, 0, 3], [0, 1, 2])  # 1, 3 and 5 at once, or 5 first

    payloads = [f["data"] for _, f in stream_entries(redis_client, stream)]
    assert payloads == [rows[n].payload for n in (0, 2, 4, 5)]
    assert [f["data"] for _, f in stream_entries(redis_client, elsewhere)] == [rows[1].payload, rows[3].payload]
    assert not OutboxEvent.objects.filter(published_at__isnull=True).exists()


@pytest.mark.django_db(transaction=True)
def test_a_batch_of_more_ids_than_djangos_sqlite_parameter_limit_is_marked_published_whole(
    settings, redis_client, stream
):
    occurred = timezone.now()
    OutboxEvent.objects.bulk_create(
        OutboxEvent(event_id=uuid.uuid4(), event_type="STOCK_ADDED", stream=stream, payload="{}", occurred_at=occurred)
        for _ in range(1200)
    )

    assert publish_pending(client=redis_client, batch_size=1200, grace_seconds=0) == 1200

    assert redis_client.xlen(stream) == 1200
    assert not OutboxEvent.objects.filter(published_at__isnull=True).exists()


def django_redis_url(client) -> str:
    kwargs = client.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs.get('db', 0)}"


CRASH_AFTER_COMMIT = """
import os
from django.db import transaction
from inventory.services import stock_item_create
with transaction.atomic():
    # Runs after commit and before the publishing callback: the process dies
    # with the row committed and nothing sent to Redis.
    transaction.on_commit(lambda: os._exit(9))
    stock_item_create(sku="CRASH-1", name="Crash", quantity=3)
"""


def test_a_crash_between_commit_and_xadd_is_recovered_by_the_relay(tmp_path, redis_client, stream):
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "EVENTING_STREAM": stream,
        "LOG_LEVEL": "WARNING",
    }
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "-v0"], env=env, check=True, timeout=120)

    crashed = subprocess.run([*manage, "shell", "-c", CRASH_AFTER_COMMIT], env=env, timeout=60)
    assert crashed.returncode == 9
    assert stream_entries(redis_client, stream) == []

    relay = subprocess.run(
        [*manage, "relay_outbox", "--once", "--grace-seconds=0"], env=env, timeout=60, capture_output=True, text=True
    )
    assert relay.returncode == 0, relay.stderr
    assert "published 1 event(s)" in relay.stdout
    [(_, fields)] = stream_entries(redis_client, stream)
    assert json.loads(fields["data"])["aggregate_id"] == "CRASH-1"

    again = subprocess.run(
        [*manage, "relay_outbox", "--once", "--grace-seconds=0"], env=env, timeout=60, capture_output=True, text=True
    )
    assert "published 0 event(s)" in again.stdout
    assert len(stream_entries(redis_client, stream)) == 1


def test_relay_once_fails_clearly_when_redis_is_unreachable(tmp_path):
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "REDIS_URL": "redis://127.0.0.1:1/0",
    }
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "-v0"], env=env, check=True, timeout=120)
    result = subprocess.run([*manage, "relay_outbox", "--once"], env=env, timeout=60, capture_output=True, text=True)
    assert result.returncode != 0
    assert "cannot reach Redis at redis://127.0.0.1:1/0" in result.stderr


@pytest.mark.django_db(transaction=True)
def test_after_a_redis_restart_the_relay_republishes_what_redis_may_have_lost(
    settings, redis_client, stream, monkeypatch
):
    import time

    from eventing.transport import relay
    from eventing.transport.client import ServerStart
    from eventing.transport.relay import _check_restart, run_id_key

    settings.EVENTING_REPUBLISH_MARGIN_SECONDS = 0
    for i in range(3):
        stock_item_create(sku=f"R-{i}", name="r", quantity=1)
    entries = stream_entries(redis_client, stream)
    assert len(entries) == 3
    # As if Redis came back from an AOF that kept only the first entry, and restarted now ...
    redis_client.delete(stream)
    redis_client.xadd(stream, entries[0][1], id=entries[0][0])
    redis_client.set(run_id_key(stream), "the-run-before")
    run_id = redis_client.info("server")["run_id"]
    time.sleep(0.01)  # the rows' published_at (to the microsecond) lie before the start, as they would
    started_ms = int(time.time() * 1000)
    monkeypatch.setattr(
        relay, "server_starts", lambda client, keys: dict.fromkeys(keys, ServerStart(run_id, started_ms))
    )
    time.sleep(0.01)
    stock_item_create(sku="R-3", name="r", quantity=1)  # ... and a web process published before the relay noticed

    _check_restart(redis_client, batch_size=10)

    skus = [json.loads(f["data"])["aggregate_id"] for _, f in stream_entries(redis_client, stream)]
    assert skus[:2] == ["R-0", "R-3"]
    assert set(skus[2:]) >= {"R-1", "R-2"}  # the lost two are back (R-0 may come twice) ...
    assert "R-3" not in skus[2:]  # ... and R-3, published after the restart, was not taken for a survivor
    assert redis_client.get(run_id_key(stream)) == run_id
    before = len(stream_entries(redis_client, stream))
    _check_restart(redis_client, batch_size=10)  # same Redis: nothing more
    assert len(stream_entries(redis_client, stream)) == before
