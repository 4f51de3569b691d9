"""Bounded tables: published outbox rows and inbox rows are pruned after their windows, in bounded
DELETEs, by the relay and by `manage.py prune_tables`; a redelivery inside the inbox window is still
recognised; the windows are checked at start-up."""

import io
import json
import logging
import threading
import uuid
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from eventing.consumer.runner import StreamConsumer
from eventing.models import DeadLetter, OutboxEvent, ProcessedEvent
from eventing.transport.relay import relay_forever, republish_lost
from eventing.transport.retention import PrunePass, PruneReport, check_retention, count_expired, prune_tables
from inventory.services import stock_item_create
from orders.models import CatalogItem
from tests.eventing.test_consumer import stock_added, xadd

pytestmark = pytest.mark.django_db(transaction=True)

DAY = 86_400


def outbox_rows(n: int, *, stream: str, published_ago: float | None, occurred_ago: float = 0) -> list[int]:
    """``n`` outbox rows published ``published_ago`` seconds ago (None: unpublished). Returns their ids."""
    now = timezone.now()
    rows = OutboxEvent.objects.bulk_create(
        OutboxEvent(
            event_id=uuid.uuid4(),
            event_type="STOCK_ADDED",
            stream=stream,
            payload="{}",
            occurred_at=now - timedelta(seconds=max(occurred_ago, published_ago or 0)),
            published_at=None if published_ago is None else now - timedelta(seconds=published_ago),
        )
        for _ in range(n)
    )
    return [row.pk for row in rows]


def inbox_rows(n: int, *, processed_ago: float, consumer: str = "orders") -> list[uuid.UUID]:
    """``n`` inbox rows processed ``processed_ago`` seconds ago. Returns their event ids."""
    event_ids = [uuid.uuid4() for _ in range(n)]
    ProcessedEvent.objects.bulk_create(ProcessedEvent(consumer=consumer, event_id=e) for e in event_ids)
    # processed_at is set on insert; age the rows afterwards.
    ProcessedEvent.objects.filter(event_id__in=event_ids).update(
        processed_at=timezone.now() - timedelta(seconds=processed_ago)
    )
    return event_ids


def test_old_published_outbox_rows_go_and_unpublished_or_young_ones_stay(settings, stream):
    settings.EVENTING_OUTBOX_RETENTION_SECONDS = DAY
    old = outbox_rows(3, stream=stream, published_ago=2 * DAY)
    young = outbox_rows(2, stream=stream, published_ago=DAY - 60)
    # Never published, and older than any window: the relay still owes them to the stream.
    stuck = outbox_rows(2, stream=stream, published_ago=None, occurred_ago=30 * DAY)

    report = prune_tables()

    assert report.outbox == 3
    remaining = set(OutboxEvent.objects.values_list("pk", flat=True))
    assert remaining == set(young) | set(stuck)
    assert not remaining & set(old)


def test_old_inbox_rows_go_and_young_ones_stay(settings):
    settings.EVENTING_INBOX_RETENTION_SECONDS = 7 * DAY
    inbox_rows(4, processed_ago=8 * DAY)
    young = inbox_rows(3, processed_ago=7 * DAY - 60)

    report = prune_tables()

    assert report.inbox == 4
    assert set(ProcessedEvent.objects.values_list("event_id", flat=True)) == set(young)


def test_inbox_rows_of_an_event_with_a_pending_dead_letter_of_its_group_stay(settings):
    """Retrying that dead letter must still find that the event was applied after all."""
    settings.EVENTING_INBOX_RETENTION_SECONDS = 7 * DAY
    held, decided, other_group = inbox_rows(3, processed_ago=30 * DAY)
    now = timezone.now()
    for n, (event_id, group, status) in enumerate(
        [
            (held, "orders", DeadLetter.Status.PENDING),
            (decided, "orders", DeadLetter.Status.DISCARDED),
            (other_group, "inventory", DeadLetter.Status.PENDING),
            ("not-a-uuid", "orders", DeadLetter.Status.PENDING),  # as a producer outside may send
        ]
    ):
        DeadLetter.objects.create(
            stream="s",
            entry_id=f"1-{n}",
            event_id=str(event_id),
            consumer_group=group,
            reason=DeadLetter.Reason.MAX_ATTEMPTS,
            attempts=5,
            first_failed_at=now,
            last_failed_at=now,
            payload="{}",
            status=status,
        )

    assert count_expired() == PruneReport(outbox=0, inbox=2, kept_for_dead_letters=1)
    report = prune_tables()

    assert (report.inbox, report.kept_for_dead_letters) == (2, 1)
    assert list(ProcessedEvent.objects.values_list("event_id", flat=True)) == [held]


def test_each_delete_takes_a_bounded_batch_of_primary_keys(settings, stream):
    settings.EVENTING_OUTBOX_RETENTION_SECONDS = DAY
    outbox_rows(250, stream=stream, published_ago=2 * DAY)
    prune = PrunePass(batch_rows=100)

    left = []
    with CaptureQueriesContext(connection) as queries:
        while prune.step():
            left.append(OutboxEvent.objects.count())

    assert left == [150, 50, 0]  # one DELETE of at most 100 rows per step
    deletes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("DELETE")]
    assert len(deletes) == 3
    assert all(sql.count(",") < 100 + 5 for sql in deletes)  # at most 100 ids in each
    assert prune.report.outbox == 250


def test_a_redelivery_inside_the_inbox_window_is_recognised_and_skipped(settings, redis_client, stream, caplog):
    settings.EVENTING_INBOX_RETENTION_SECONDS = 7 * DAY
    envelope = stock_added("R-1")
    xadd(redis_client, stream, envelope)
    StreamConsumer(name="orders", block_ms=5).run_until_idle()
    assert CatalogItem.objects.get(sku="R-1").name == "item R-1"
    # A later change that applying the event again would undo.
    CatalogItem.objects.filter(sku="R-1").update(name="renamed since")
    # Applied almost a week ago: still inside the window, so the prune keeps it.
    ProcessedEvent.objects.update(processed_at=timezone.now() - timedelta(seconds=7 * DAY - 3600))
    assert prune_tables().inbox == 0

    xadd(redis_client, stream, envelope)  # the same event again: a republish, a reclaim, a retried dead letter
    with caplog.at_level(logging.INFO, logger="eventing.consumer.applying"):
        consumer = StreamConsumer(name="orders", block_ms=5)
        consumer.run_until_idle()

    assert consumer.processed == 1  # acked ...
    assert CatalogItem.objects.get(sku="R-1").name == "renamed since"  # ... but not applied again
    assert f"STOCK_ADDED {envelope.id} already applied; skipping the duplicate" in caplog.text


def test_a_redelivery_after_the_inbox_window_would_be_applied_again(settings, redis_client, stream):
    """Why the inbox window must outlive every way an event can come back."""
    settings.EVENTING_INBOX_RETENTION_SECONDS = 7 * DAY
    envelope = stock_added("R-2")
    xadd(redis_client, stream, envelope)
    StreamConsumer(name="orders", block_ms=5).run_until_idle()
    CatalogItem.objects.filter(sku="R-2").update(name="renamed since")
    ProcessedEvent.objects.update(processed_at=timezone.now() - timedelta(seconds=7 * DAY + 3600))
    assert prune_tables().inbox == 1

    xadd(redis_client, stream, envelope)
    StreamConsumer(name="orders", block_ms=5).run_until_idle()

    assert CatalogItem.objects.get(sku="R-2").name == "item R-2"  # the old event undid the later change


def test_after_a_redis_data_loss_only_kept_outbox_rows_come_back_and_the_inbox_skips_them(
    settings, redis_client, stream
):
    settings.EVENTING_OUTBOX_RETENTION_SECONDS = DAY
    for n in range(4):
        stock_item_create(sku=f"L-{n}", name=f"lamp {n}", quantity=1)  # published after commit
    StreamConsumer(name="orders", block_ms=5).run_until_idle()
    assert ProcessedEvent.objects.filter(consumer="orders").count() == 4
    # Two were published two days ago: their rows are past the outbox window.
    old = list(OutboxEvent.objects.order_by("id").values_list("pk", flat=True)[:2])
    OutboxEvent.objects.filter(pk__in=old).update(published_at=timezone.now() - timedelta(days=2))
    assert prune_tables().outbox == 2

    redis_client.delete(stream)  # Redis came back without its data: every kept row goes out again
    assert republish_lost(client=redis_client, batch_size=10) == 2
    consumer = StreamConsumer(name="orders", block_ms=5)
    consumer.run_until_idle()

    assert consumer.processed == 2
    assert ProcessedEvent.objects.filter(consumer="orders").count() == 4  # both recognised, none applied twice
    sent = [json.loads(fields["data"])["aggregate_id"] for _, fields in redis_client.xrange(stream)]
    assert sent == ["L-2", "L-3"]


def test_table_sizes_stay_bounded_while_rows_keep_arriving(settings, stream):
    """Waves of rows arrive an hour apart for two days; pruning after each wave keeps at most a window's worth."""
    settings.EVENTING_OUTBOX_RETENTION_SECONDS = 6 * 3600
    settings.EVENTING_INBOX_RETENTION_SECONDS = 12 * 3600
    start, per_wave, hours = timezone.now() - timedelta(hours=48), 40, 48
    outbox_sizes, inbox_sizes = [], []
    for hour in range(hours):
        clock = start + timedelta(hours=hour)
        ago = (timezone.now() - clock).total_seconds()
        outbox_rows(per_wave, stream=stream, published_ago=ago)
        inbox_rows(per_wave, processed_ago=ago)
        prune_tables(now=clock, batch_rows=25)
        outbox_sizes.append(OutboxEvent.objects.count())
        inbox_sizes.append(ProcessedEvent.objects.count())

    # Rows published less than the window before the clock stay: the window's hours plus the wave just in.
    assert max(outbox_sizes) == per_wave * (6 + 1)
    assert max(inbox_sizes) == per_wave * (12 + 1)
    assert outbox_sizes[-10:] == [per_wave * 7] * 10  # steady, not growing
    assert inbox_sizes[-10:] == [per_wave * 13] * 10
    assert sum(outbox_sizes[:3]) < sum(outbox_sizes[-3:])  # it filled up to the window first


def test_the_relay_prunes_every_interval_and_still_publishes(settings, stream, redis_client):
    settings.EVENTING_PRUNE_INTERVAL_SECONDS = 0
    settings.EVENTING_OUTBOX_RETENTION_SECONDS = DAY
    settings.EVENTING_INBOX_RETENTION_SECONDS = 7 * DAY
    outbox_rows(30, stream=stream, published_ago=2 * DAY)
    young = outbox_rows(5, stream=stream, published_ago=60)
    stuck = outbox_rows(2, stream=stream, published_ago=None, occurred_ago=3 * DAY)
    inbox_rows(20, processed_ago=8 * DAY)
    kept = inbox_rows(3, processed_ago=DAY)

    stop = threading.Event()
    timer = threading.Timer(1.5, stop.set)  # the relay itself runs here: the test database is this thread's
    timer.start()
    try:
        relay_forever(stop=stop, grace_seconds=0)
    finally:
        timer.cancel()

    assert set(OutboxEvent.objects.values_list("pk", flat=True)) == set(young) | set(stuck)
    assert not OutboxEvent.objects.filter(published_at__isnull=True).exists()  # the stuck rows went out
    assert redis_client.xlen(stream) >= 2
    assert set(ProcessedEvent.objects.values_list("event_id", flat=True)) == set(kept)


def test_prune_tables_command_counts_on_a_dry_run_and_then_deletes(settings, stream):
    settings.EVENTING_OUTBOX_RETENTION_SECONDS = DAY
    settings.EVENTING_INBOX_RETENTION_SECONDS = 7 * DAY
    outbox_rows(3, stream=stream, published_ago=2 * DAY)
    outbox_rows(1, stream=stream, published_ago=None, occurred_ago=2 * DAY)
    inbox_rows(2, processed_ago=8 * DAY)

    out = io.StringIO()
    call_command("prune_tables", "--dry-run", stdout=out)
    assert "outbox: would delete 3 published row(s) older than 86400s" in out.getvalue()
    assert "inbox: would delete 2 row(s) older than 604800s" in out.getvalue()
    assert (OutboxEvent.objects.count(), ProcessedEvent.objects.count()) == (4, 2)

    out = io.StringIO()
    call_command("prune_tables", stdout=out)
    assert "outbox: deleted 3 published row(s)" in out.getvalue()
    assert "inbox: deleted 2 row(s)" in out.getvalue()
    assert (OutboxEvent.objects.count(), ProcessedEvent.objects.count()) == (1, 0)


def test_the_default_windows_pass_the_system_check():
    assert check_retention() == []


def test_an_inbox_window_shorter_than_the_longest_redelivery_is_refused_at_start(settings):
    settings.EVENTING_OUTBOX_RETENTION_SECONDS = DAY
    settings.EVENTING_INBOX_RETENTION_SECONDS = DAY  # short of the outbox day plus prune, claim and margin

    [error] = check_retention()
    assert error.id == "eventing.E002"
    assert "EVENTING_INBOX_RETENTION_SECONDS (86400) is shorter than" in error.msg
    assert "EVENTING_CLAIM_IDLE_MS / 1000 (60)" in error.msg
    with pytest.raises(SystemCheckError, match="eventing.E002"):
        call_command("check", stdout=io.StringIO(), stderr=io.StringIO())


def test_an_outbox_window_inside_the_republish_margin_is_refused(settings):
    settings.EVENTING_OUTBOX_RETENTION_SECONDS = 1

    assert [e.id for e in check_retention()] == ["eventing.E001"]
