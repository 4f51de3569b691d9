"""Publishing the outbox to Redis Streams.

Each process publishes the rows its own transactions committed right after
commit (:func:`publish_after_commit`). Whatever that misses — the process died
between commit and XADD, or Redis was down — stays unpublished in the table,
and :func:`relay_forever` (``manage.py relay_outbox``) publishes it.
"""

import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from eventing.models import OutboxEvent
from eventing.telemetry import tracing
from eventing.telemetry.metrics import RELAY_PUBLISH_SECONDS, RELAY_PUBLISHED
from eventing.transport.client import (
    CREDENTIAL_ERRORS,
    REDIS_ERRORS,
    RedisClient,
    credentials_refused,
    get_redis,
    is_cluster,
    is_missing_key,
    redact_url,
    send_pipelined,
    server_starts,
)
from eventing.transport.retention import PrunePass
from eventing.transport.streams import is_stream_of_bus, partition_streams, run_id_key, stream_for
from eventing.transport.trim import trim_streams

logger = logging.getLogger(__name__)


class RelayError(Exception):
    """The relay was asked to publish once and could not reach Redis."""


# How long the relay leaves aside the rows of a partition whose cluster master did not take them: it tries
# once a second, so the other partitions' rows never queue behind them.
PARTITION_RETRY_SECONDS = 1.0


class PublishIncomplete(redis.ConnectionError):
    """Some partitions of a cluster did not take their rows; the others' were published and marked."""

    def __init__(self, streams: list[str], error: Exception) -> None:
        super().__init__(f"{', '.join(streams)}: {type(error).__name__}: {error}")
        self.streams = streams


# How often the relay asks whether a Redis server restarted. redis-py reconnects behind the relay's back,
# so a restart during a quiet moment raises nothing; asking costs one INFO per server and a GET per
# partition, and what a restart lost waits at most this long to go out again.
RESTART_CHECK_SECONDS = 5.0


# What the relay reads of a row: (id, stream, event_type, payload, occurred_at as the ``timestamp`` field
# sends it). Only these columns, as tuples: building model instances (and converting the columns it never
# sends) cost as much as the XADDs.
Pending = tuple[int, str, str, str, str]
PENDING_COLUMNS = ("id", "stream", "event_type", "payload", "occurred_at")


def _publish(rows: Sequence[Pending], *, client: RedisClient, marks: "BackgroundMarks | None" = None) -> int:
    """Publish the rows and mark those Redis took (with ``marks``, on its thread); when a partition could
    not take its rows, the others are still marked and PublishIncomplete (or, on one Redis, the error) is
    raised after."""
    if not rows:
        return 0
    started = time.perf_counter()
    stored, error = _xadd(rows, client=client)
    RELAY_PUBLISH_SECONDS.observe(time.perf_counter() - started)
    if marks is None:
        _mark_published(stored)
    else:
        marks.mark(stored)
    RELAY_PUBLISHED.inc(len(stored))
    if error is not None:
        if isinstance(error, CREDENTIAL_ERRORS) or not is_cluster(client):
            raise error
        published = {row[1] for row in stored}
        raise PublishIncomplete(sorted({row[1] for row in rows} - published), error)
    return len(stored)


def _mark_published(rows: Sequence[Pending]) -> None:
    """One UPDATE of exactly the ids sent (on SQLite, one per 999 of them).

    Never by id range: on PostgreSQL a transaction still open when the batch was read can commit a row with
    an id inside the range, and marking it would mean it is never sent. Plain SQL: the ORM's filter() and
    update() on a batch's ids cost as much as the UPDATE itself."""
    if not rows:
        return
    table = connection.ops.quote_name(OutboxEvent._meta.db_table)
    now = OutboxEvent._meta.get_field("published_at").get_db_prep_value(timezone.now(), connection)
    ids = [row[0] for row in rows]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # One array parameter, however many ids, passed as its text ('{1,2,3}'): Django's client-side
            # binding quoted a list of 500 ints in 0.3 ms, joining them costs 0.05 (the server reads both
            # alike). A mark that finds nothing to do took 0.65 ms here, against 0.9 to 1.6 before.
            sql = f"UPDATE {table} SET published_at = %s WHERE id = ANY(%s::bigint[]) AND published_at IS NULL"  # noqa: S608 - name quoted, values bound
            cursor.execute(sql, [now, f"{{{','.join(map(str, ids))}}}"])
            return
        chunk = (connection.features.max_query_params or len(ids) + 1) - 1
        for start in range(0, len(ids), chunk):
            part = ids[start : start + chunk]
            marks = ", ".join(["%s"] * len(part))
            sql = f"UPDATE {table} SET published_at = %s WHERE id IN ({marks}) AND published_at IS NULL"  # noqa: S608 - name quoted, values bound
            cursor.execute(sql, [now, *part])


class BackgroundMarks:
    """The relay's marks, each run on a thread of its own with its own database connection: the UPDATE of one
    batch runs while the relay reads and sends the next, where it waited for it before (PostgreSQL, 20k rows
    in batches of 500, a prototype: 339 against 386 ms, median of 4 alternated runs; the UPDATE is most of
    the relay's database time, a new version of each row with an entry in three indexes, never a HOT update
    since both partial indexes name published_at).

    One batch is marked at a time, in the order sent. While it is, its id range is left out of the next read
    (:attr:`sending`), so none of its rows is sent twice. A crash before a mark commits re-publishes the
    batch, as a crash between XADD and the mark always did; a mark that fails is raised by the next
    :meth:`mark` or :meth:`wait`. See :func:`background_marks` for where they are used."""

    def __init__(self) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relay-marks")
        self._pending: Future[None] | None = None
        self._range = (0, 0)  # the lowest and highest id of the batch submitted last

    @property
    def sending(self) -> tuple[int, int] | None:
        """The id range of the batch being marked, while it is being marked. Once the mark is over the range
        is read again: an unpublished row inside it that was not sent (committed late, or of a partition set
        aside) is not left out for longer."""
        return self._range if self._pending is not None and not self._pending.done() else None

    def mark(self, rows: Sequence[Pending]) -> None:
        """Mark ``rows`` once the batch before them is marked (raising what marking that one raised)."""
        self.wait()
        if rows:
            self._range = (min(row[0] for row in rows), max(row[0] for row in rows))
            self._pending = self._thread.submit(_mark_on_thread, rows)

    def wait(self) -> None:
        """Until the batch being marked is; raises what marking it raised (its rows stay unpublished)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        """Wait for the last mark, then close the thread's connection and the thread."""
        try:
            self.wait()
        finally:
            self._thread.submit(_close_connection).result()
            self._thread.shutdown()


def _mark_on_thread(rows: Sequence[Pending]) -> None:
    # The thread's connection may sit idle for hours while the writers publish everything themselves: as the
    # consumers do per batch, drop it when it is past CONN_MAX_AGE or broken (a restarted server), and let
    # CONN_HEALTH_CHECKS try it before use, rather than fail the mark on a dead connection.
    connection.close_if_unusable_or_obsolete()
    _mark_published(rows)


def _close_connection() -> None:
    connection.close()  # this thread's own


@contextmanager
def background_marks() -> Iterator[BackgroundMarks | None]:
    """BackgroundMarks where they help and are safe, closed at the end of the block; None (mark before
    returning) elsewhere. On PostgreSQL, outside a transaction (the thread's connection would not see rows
    this one has not committed, and would mark none of them). Not on SQLite: it has one writer, whose lock
    the mark holds wherever it runs, and its in-memory test database shares one cache between connections,
    which locks the table to the other thread ("database table is locked")."""
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        yield None
        return
    marks = BackgroundMarks()
    try:
        yield marks
    finally:
        marks.close()


def _xadd(rows: Sequence[Pending], *, client: RedisClient) -> tuple[list[Pending], Exception | None]:
    """XADD the rows: (the rows Redis took, the error that kept the others out, if any).

    One Redis takes them all or none, in one round trip. A cluster takes them partition by partition: a
    master that is down keeps only its partitions' rows out, and the others are marked published (else
    each retry would add them again)."""
    if not is_cluster(client):
        _xadd_pipelined(rows, client=client)
        return list(rows), None
    by_stream: dict[str, list[Pending]] = defaultdict(list)
    for row in rows:
        by_stream[row[1]].append(row)
    stored: list[Pending] = []
    error: Exception | None = None
    for stream, part in by_stream.items():
        try:
            _xadd_pipelined(part, client=client)
        except REDIS_ERRORS as exc:
            logger.warning("could not publish %d event(s) to %s: %s", len(part), stream, exc)
            error = error or exc
        else:
            stored += part
    return stored, error


def _xadd_pipelined(rows: Sequence[Pending], *, client: RedisClient) -> None:
    commands = [
        ("XADD", stream, "*", "type", event_type, "data", payload, "timestamp", timestamp)
        for _, stream, event_type, payload, timestamp in rows
    ]
    if isinstance(client, redis.Redis) and not tracing.enabled():
        send_pipelined(client, commands)
        return
    pipe = client.pipeline(transaction=False)
    for command in commands:
        # What pipe.xadd(stream, {...}) sends, without its per-call argument handling.
        pipe.execute_command(*command)
    pipe.execute()


# Set while a consumer applies a batch: rows committed meanwhile are published
# together when the batch is done, in one round trip and one UPDATE.
_batch: ContextVar[list[Pending] | None] = ContextVar("publishing_batch", default=None)


def _publish_best_effort(rows: list[Pending]) -> None:
    """XADD the rows in one pipelined round trip (on a cluster, one per partition), then mark them published.
    A crash between the two re-publishes the rows later; consumers and the event log recognise the
    duplicate by its event id."""
    try:
        _publish(rows, client=get_redis(socket_timeout=settings.EVENTING_PUBLISH_TIMEOUT_SECONDS))
    except Exception as exc:  # noqa: BLE001 - the rows are safe in the outbox; the relay retries them
        logger.warning("could not publish %d event(s) after commit, the relay will: %s", len(rows), exc)


def publish_after_commit(row: Pending) -> None:
    """Best effort, from the committing process: on failure the relay publishes it."""

    def _publish() -> None:
        batch = _batch.get()
        if batch is None:
            _publish_best_effort([row])
        else:
            batch.append(row)

    transaction.on_commit(_publish)


@contextmanager
def publishing_batch() -> Iterator[None]:
    """Collect the rows committed inside the block and publish them together at its end."""
    rows: list[Pending] = []
    token = _batch.set(rows)
    try:
        yield
    finally:
        _batch.reset(token)
        if rows:
            _publish_best_effort(rows)


def publish_pending(
    *,
    client: RedisClient,
    batch_size: int,
    grace_seconds: float,
    skip: Sequence[str] = (),
    marks: BackgroundMarks | None = None,
) -> int:
    """Publish one batch of rows left unpublished for longer than the grace period (but those of ``skip``,
    partitions whose master did not answer a moment ago). With ``marks`` the batch is marked on its
    thread, while the next one is read and sent; without, before returning."""
    cutoff = timezone.now() - timedelta(seconds=grace_seconds)
    sending = marks.sending if marks else None
    rows = _select_pending(cutoff=cutoff, limit=batch_size, skip=skip, sending=sending)
    return _publish(_rerouted(rows), client=client, marks=marks)


def _select_pending(
    *, cutoff: datetime, limit: int, skip: Sequence[str], sending: tuple[int, int] | None = None
) -> list[Pending]:
    """The oldest ``limit`` unpublished rows that occurred by ``cutoff``, but those bound for ``skip`` and
    those in ``sending`` (the id range of a batch being marked, :attr:`BackgroundMarks.sending`).

    Plain SQL on the partial index of unpublished rows: the ORM's query building and its per-row datetime
    converter cost a third of the relay's time on a backlog, and the timestamp is only sent as text."""
    table = connection.ops.quote_name(OutboxEvent._meta.db_table)
    params: list[Any] = [OutboxEvent._meta.get_field("occurred_at").get_db_prep_value(cutoff, connection)]
    left_out = ""
    if skip:
        left_out = f" AND stream NOT IN ({', '.join(['%s'] * len(skip))})"
        params += skip
    if sending:
        left_out += " AND id NOT BETWEEN %s AND %s"
        params += sending
    occurred_at = OCCURRED_AT_TEXT.get(connection.vendor, "occurred_at")
    sql = (
        f"SELECT id, stream, event_type, payload, {occurred_at} FROM {table} "  # noqa: S608 - names quoted, values bound
        f"WHERE published_at IS NULL AND occurred_at <= %s{left_out} ORDER BY id LIMIT %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, limit])
        # fetchall(), not iteration: one call loads the batch, where iterating went through Django's cursor
        # wrapper and psycopg's fetchone() row by row (PostgreSQL, 20k rows: 67 against 78 ms, median of 6).
        rows = cursor.fetchall()
    return [(pk, stream, event_type, payload, _timestamp(at)) for pk, stream, event_type, payload, at in rows]


# occurred_at as UTC text, 'YYYY-MM-DD HH:MM:SS[.ffffff]', which _timestamp rewrites in place: reading it as a
# datetime cost more than the rest of the row (psycopg's and Django's timestamptz loaders: 4 us a row against
# 1 us for the whole row without it; SQLite's converter parses what Django stored as text).
OCCURRED_AT_TEXT = {
    "sqlite": "CAST(occurred_at AS TEXT)",  # what Django stored: str() of the naive UTC time
    "postgresql": "to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')",
}


def _timestamp(value: datetime | str) -> str:
    """An occurred_at column as the ``timestamp`` field sends it: what ``datetime.isoformat()`` gives for the
    aware UTC time the ORM would have read (no fraction when the microseconds are 0)."""
    if isinstance(value, str):
        if len(value) in (19, 26) and value[10] == " ":
            if value.endswith(".000000"):
                value = value[:19]
            return f"{value[:10]}T{value[11:]}+00:00"
        value = datetime.fromisoformat(value)
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


def _sendable(rows: Iterable[tuple[int, str, str, str, datetime]]) -> list[Pending]:
    """Rows read through the ORM, their occurred_at as the ``timestamp`` field sends it."""
    return [(pk, stream, event_type, payload, at.isoformat()) for pk, stream, event_type, payload, at in rows]


def _rerouted(rows: list[Pending]) -> list[Pending]:
    """The rows, each bound for a partition of the bus as it is now.

    A row is routed when it is written. One left unpublished across a change of EVENTING_PARTITIONS names
    a stream no consumer reads any more: it goes to its aggregate's partition now, and its row says so
    (republishing looks rows up by stream)."""
    current = set(partition_streams())
    routed: list[Pending] = []
    for row in rows:
        pk, stream, event_type, payload, occurred_at = row
        if stream not in current and is_stream_of_bus(stream):
            new = stream_for(str(json.loads(payload)["aggregate_id"]))
            OutboxEvent.objects.filter(pk=pk).update(stream=new)
            logger.warning(
                "event row %d was routed to %s before a repartitioning; publishing it to %s", pk, stream, new
            )
            row = (pk, new, event_type, payload, occurred_at)
        routed.append(row)
    return routed


def republish_lost(
    *,
    client: RedisClient,
    batch_size: int,
    streams: Sequence[str] | None = None,
    restarted: Mapping[str, int] | None = None,
) -> int:
    """Re-publish what a Redis restart may have lost from ``streams`` (default: every partition).

    Redis persists its AOF every second, so a crash can lose XADDs it had
    acknowledged, and a server back from a lost disk has lost everything. Each
    stream's last entry from before the restart says up to when its data
    survived; rows published since then (less a margin for clock skew) go out
    again, and consumers drop the duplicates by event id.

    With ``restarted`` (stream -> when the server holding it started, in ms by
    its own clock) only what that restart can have lost goes out: from the last
    entry older than the start up to the start (each bound widened by the
    margin). Entries added since the start — by processes that published before
    the relay noticed the restart — are not taken for survivors, and rows
    published since are in the stream already. Without it, a stream's last entry
    is taken as the last survivor.

    Only the partitions of the bus as it is now: a stream retired by a
    repartitioning was drained before it (docs/scaling.md), and nobody reads it
    any more.
    """
    margin = timedelta(seconds=settings.EVENTING_REPUBLISH_MARGIN_SECONDS)
    total = 0
    for stream in list(restarted or ()) or streams or partition_streams():
        started_ms = restarted[stream] if restarted else None
        last_id = _last_survivor(client, stream, started_ms)
        survived_until = _moment(int(last_id.split("-")[0]))
        rows = OutboxEvent.objects.filter(stream=stream, published_at__gte=survived_until - margin)
        if started_ms is not None:
            rows = rows.filter(published_at__lte=_moment(started_ms) + margin)
        start, after = 0, 0
        while batch := _sendable(rows.order_by("id").filter(id__gt=after).values_list(*PENDING_COLUMNS)[:batch_size]):
            _stored, error = _xadd(batch, client=client)
            if error is not None:
                raise error
            start += len(batch)
            after = batch[-1][0]
        if start:
            logger.warning(
                "re-published %d event(s) to %s that Redis may have lost (data survived until %s)",
                start,
                stream,
                survived_until,
            )
        total += start
    return total


def _last_survivor(client: RedisClient, stream: str, started_ms: int | None) -> str:
    """The id of the last entry of ``stream`` that a restart at ``started_ms`` left (or, without it, of its
    last entry); "0-0" when there is none."""
    if started_ms is not None:
        before = client.xrevrange(stream, max=f"({started_ms}-0", min="-", count=1)
        return str(before[0][0]) if before else "0-0"
    try:
        return str(client.xinfo_stream(stream)["last-generated-id"])
    except redis.ResponseError as exc:
        if not is_missing_key(exc):
            raise
        return "0-0"  # the stream itself is gone


def _moment(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _check_restart(client: RedisClient, batch_size: int, marks: BackgroundMarks | None = None) -> None:
    """Notice a Redis server that restarted (its run id changed) and re-publish what the partitions it
    holds may have lost. On a cluster each master restarts on its own: only its partitions go out again.

    The batch being marked is marked first: re-publishing finds what to send by published_at, and a batch
    sent just before the restart, still unmarked, would not be found, then marked, and never sent again."""
    if marks is not None:
        marks.wait()
    restarted = {
        stream: start
        for stream, start in server_starts(client, partition_streams()).items()
        if client.get(run_id_key(stream)) != start.run_id
    }
    if restarted:
        republish_lost(
            client=client,
            batch_size=batch_size,
            restarted={stream: start.started_ms for stream, start in restarted.items()},
        )
        for stream, start in restarted.items():
            client.set(run_id_key(stream), start.run_id)


def _prune_step(prune: PrunePass | None, next_prune: float) -> tuple[PrunePass | None, float]:
    """Start a pass over the outbox and inbox when one is due, and run one bounded DELETE of it.
    Returns the pass still under way (or None) and when the next one is due."""
    if prune is None:
        if time.monotonic() < next_prune:
            return None, next_prune
        prune, next_prune = PrunePass(), time.monotonic() + settings.EVENTING_PRUNE_INTERVAL_SECONDS
    try:
        return (prune if prune.step() else None), next_prune
    except DatabaseError as exc:
        # Publishing matters more: give up this pass, the next one deletes what this one left.
        logger.warning(
            "relay could not prune the outbox and inbox (%s); trying again in %ss",
            exc,
            settings.EVENTING_PRUNE_INTERVAL_SECONDS,
        )
        return None, next_prune


def relay_forever(*, stop: threading.Event, once: bool = False, grace_seconds: float | None = None) -> int:
    """Publish pending rows until ``stop`` is set (or, with ``once``, until none are left).

    On every (re)connection it checks whether Redis restarted; every
    EVENTING_TRIM_INTERVAL_SECONDS it trims what every group has acked, and
    every EVENTING_PRUNE_INTERVAL_SECONDS it deletes expired outbox and inbox
    rows, one bounded DELETE between two rounds of publishing. On PostgreSQL
    each batch is marked published on a thread of its own while the next is
    read and sent (:func:`background_marks`).
    """
    with background_marks() as marks:
        return _relay(stop=stop, once=once, grace_seconds=grace_seconds, marks=marks)


def _relay(*, stop: threading.Event, once: bool, grace_seconds: float | None, marks: BackgroundMarks | None) -> int:
    batch_size = settings.EVENTING_RELAY_BATCH_SIZE
    grace = settings.EVENTING_RELAY_GRACE_SECONDS if grace_seconds is None else grace_seconds
    client = get_redis()
    total, backoff, connected = 0, 0.0, False
    next_trim = time.monotonic() + settings.EVENTING_TRIM_INTERVAL_SECONDS
    next_restart_check = time.monotonic() + RESTART_CHECK_SECONDS
    set_aside: dict[str, float] = {}  # partitions whose master did not take their rows, until when
    next_prune, prune = time.monotonic() + settings.EVENTING_PRUNE_INTERVAL_SECONDS, None
    while not stop.is_set():
        try:
            if not connected:
                client.ping()
                connected = True
                logger.info("relay publishing to %s", redact_url(settings.REDIS_URL))
                _check_restart(client, batch_size, marks)
            elif time.monotonic() >= next_restart_check and not once:
                next_restart_check = time.monotonic() + RESTART_CHECK_SECONDS
                _check_restart(client, batch_size, marks)
            now = time.monotonic()
            skip = [stream for stream, until in set_aside.items() if until > now]
            published = publish_pending(
                client=client, batch_size=batch_size, grace_seconds=grace, skip=skip, marks=marks
            )
            if time.monotonic() >= next_trim and not once:
                next_trim = time.monotonic() + settings.EVENTING_TRIM_INTERVAL_SECONDS
                # Every partition even when the outbox has no row of it left (pruned): its groups keep acking;
                # and a stream retired by a repartitioning while rows still name it.
                streams = {*partition_streams(), *OutboxEvent.objects.values_list("stream", flat=True).distinct()}
                for stream in sorted(streams):
                    trim_streams(client, stream)
        except CREDENTIAL_ERRORS as exc:
            raise RelayError(credentials_refused(exc)) from exc
        except PublishIncomplete as exc:
            if once:
                raise RelayError(f"cannot publish to {exc}") from exc
            # The other partitions' rows went out: carry on with them, and try these again in a moment.
            set_aside.update(dict.fromkeys(exc.streams, time.monotonic() + PARTITION_RETRY_SECONDS))
            continue
        except REDIS_ERRORS as exc:
            if once:
                raise RelayError(f"cannot reach Redis at {redact_url(settings.REDIS_URL)}: {exc}") from exc
            connected = False
            backoff = min(max(backoff * 2, 0.5), settings.EVENTING_MAX_BACKOFF_SECONDS)
            logger.error("relay cannot reach Redis (%s); retrying in %.1fs", exc, backoff)
            stop.wait(backoff)
            continue
        backoff = 0.0
        if published:
            total += published
            logger.info("relay published %d event(s)", published)
        if not once:
            prune, next_prune = _prune_step(prune, next_prune)
        if published < batch_size:
            if once:
                break
            if prune is None:  # while a pass is under way, its next DELETE follows at once
                stop.wait(settings.EVENTING_RELAY_POLL_SECONDS)
    return total
