"""The bus at a glance: per partition stream, each consumer group's lag, pending entries, the age of the oldest
one, its consumers and its dead letters; the outbox backlog; the dead-letter queue by status and reason.

One snapshot serves ``manage.py streams``, the admin's bus status page, readiness and the metrics, so they
always agree. It costs a few Redis round trips per group and three small SQL aggregates, whatever the
size of the streams and tables (XINFO, XPENDING's summary and COUNT over indexed columns).
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any, cast

import redis
from django.conf import settings
from django.db.models import Count, Min

from eventing.consumer.health import HEALTH_TTL_SECONDS, HealthRecord, health_pattern, parse_health_key
from eventing.contract import consumers as registry
from eventing.models import DeadLetter, OutboxEvent
from eventing.transport.client import RedisClient, get_redis, is_missing_key
from eventing.transport.streams import partition_streams, retry_stream


@dataclasses.dataclass(frozen=True)
class ConsumerStatus:
    """One consumer (process) of a group, as Redis knows it."""

    name: str
    pending: int
    idle_seconds: float
    alive: bool  # its health record is fresh and says ready


@dataclasses.dataclass(frozen=True)
class GroupStatus:
    name: str
    declared: bool  # a consumer this code base declares (else a leftover group)
    exists: bool  # the group exists on the stream
    lag: int | None  # not yet delivered to the group, main and retry stream (None: Redis cannot tell after a trim)
    pending: int  # delivered, not acked (main stream and the group's retry stream)
    oldest_pending_age_seconds: float | None  # since the oldest unacked entry was published
    consumers: list[ConsumerStatus]
    dead_letters: int  # pending a decision in the dead-letter queue

    @property
    def alive(self) -> int:
        return sum(consumer.alive for consumer in self.consumers)


@dataclasses.dataclass(frozen=True)
class StreamStatus:
    name: str
    length: int
    groups: list[GroupStatus]


@dataclasses.dataclass(frozen=True)
class OutboxStatus:
    backlog: int  # rows not yet published
    oldest_age_seconds: float | None


@dataclasses.dataclass(frozen=True)
class BusStatus:
    taken_at: datetime
    streams: list[StreamStatus]
    outbox: OutboxStatus
    dead_letters: dict[tuple[str, str], int]  # (status, reason) -> count

    def to_dict(self) -> dict[str, Any]:
        doc = dataclasses.asdict(self)
        doc["taken_at"] = self.taken_at.isoformat()
        doc["dead_letters"] = [
            {"status": status, "reason": reason, "count": count}
            for (status, reason), count in sorted(self.dead_letters.items())
        ]
        for stream, stream_doc in zip(self.streams, doc["streams"], strict=True):
            for group, group_doc in zip(stream.groups, stream_doc["groups"], strict=True):
                group_doc["alive"] = group.alive
        return doc


def _age(entry_id: str, now_ms: float) -> float:
    return max(now_ms - int(entry_id.split("-", 1)[0]), 0) / 1000


def read_heartbeats(
    client: RedisClient, stream: str, *, group: str | None = None
) -> dict[tuple[str, str], HealthRecord]:
    """The fresh health records of the consumers of the bus of ``stream`` (of one ``group``), by (group, consumer):
    one SCAN and one MGET."""
    keys = sorted(str(key) for key in client.scan_iter(health_pattern(stream=stream, group=group), count=500))
    values = cast(list[str | None], client.mget(keys)) if keys else []
    return {
        parse_health_key(key, stream=stream): HealthRecord.from_json(value)
        for key, value in zip(keys, values, strict=True)
        if value
    }


def _not_there(exc: redis.ResponseError) -> bool:
    """The stream or the group does not exist (yet), as opposed to a server that cannot answer."""
    return is_missing_key(exc) or "NOGROUP" in str(exc)


def _pending_summary(client: RedisClient, stream: str, group: str) -> tuple[int, str | None, dict[str, int]]:
    """(count, oldest id, per consumer) of what ``group`` holds unacked on ``stream``; none when it has no group."""
    try:
        summary = client.xpending(stream, group)
    except redis.ResponseError as exc:  # NOGROUP: the group has not read this (retry) stream yet
        if not _not_there(exc):
            raise
        return 0, None, {}
    per_consumer = {str(item["name"]): int(item["pending"]) for item in summary.get("consumers") or []}
    return int(summary["pending"]), summary.get("min"), per_consumer


def _retry_lag(client: RedisClient, stream: str, group: str) -> int | None:
    """Entries of ``group``'s retry stream of ``stream`` not yet delivered to it."""
    try:
        infos = client.xinfo_groups(retry_stream(stream, group))
    except redis.ResponseError as exc:
        if not _not_there(exc):
            raise
        return 0
    lag = next((info.get("lag") for info in infos if str(info["name"]) == group), 0)
    return None if lag is None else int(lag)


def stream_status(
    client: RedisClient,
    stream: str,
    *,
    dead_letters: dict[str, int],
    heartbeats: dict[tuple[str, str], HealthRecord] | None = None,
) -> StreamStatus:
    """One stream (a partition) and its groups; ``heartbeats`` are the bus's consumers' health records."""
    now_ms = time.time() * 1000
    try:
        length = int(client.xlen(stream))
        groups = {str(info["name"]): info for info in client.xinfo_groups(stream)}
    except redis.ResponseError as exc:  # no such stream yet
        if not _not_there(exc):
            raise
        length, groups = 0, {}
    if heartbeats is None:
        heartbeats = read_heartbeats(client, settings.EVENTING_STREAM)
    declared = registry.consumer_names()
    statuses = []
    for name in sorted(set(declared) | set(groups)):
        info = groups.get(name)
        pending, oldest, per_consumer = _pending_summary(client, stream, name) if info else (0, None, {})
        retry_pending, retry_oldest, retry_per_consumer = (
            _pending_summary(client, retry_stream(stream, name), name) if info else (0, None, {})
        )
        oldest_ids = [entry_id for entry_id in (oldest, retry_oldest) if entry_id]
        consumers: list[ConsumerStatus] = []
        if info:
            for consumer in client.xinfo_consumers(stream, name):
                consumer_name = str(consumer["name"])
                record = heartbeats.get((name, consumer_name))
                consumers.append(
                    ConsumerStatus(
                        name=consumer_name,
                        pending=per_consumer.get(consumer_name, 0) + retry_per_consumer.get(consumer_name, 0),
                        idle_seconds=int(consumer["idle"]) / 1000,
                        alive=record is not None and record.ready,
                    )
                )
        lag = info.get("lag") if info else length
        if info and lag is not None:
            retry_lag = _retry_lag(client, stream, name)
            lag = None if retry_lag is None else int(lag) + retry_lag
        statuses.append(
            GroupStatus(
                name=name,
                declared=name in declared,
                exists=info is not None,
                lag=None if lag is None else int(lag),
                pending=pending + retry_pending,
                oldest_pending_age_seconds=max(_age(entry_id, now_ms) for entry_id in oldest_ids)
                if oldest_ids
                else None,
                consumers=consumers,
                dead_letters=dead_letters.get(name, 0),
            )
        )
    return StreamStatus(name=stream, length=length, groups=statuses)


def outbox_status() -> OutboxStatus:
    backlog = OutboxEvent.objects.filter(published_at__isnull=True).aggregate(n=Count("id"), oldest=Min("occurred_at"))
    oldest = backlog["oldest"]
    age = (datetime.now(UTC) - oldest).total_seconds() if oldest is not None else None
    return OutboxStatus(backlog=int(backlog["n"]), oldest_age_seconds=age)


def dead_letter_counts() -> dict[tuple[str, str], int]:
    rows = DeadLetter.objects.values_list("status", "reason").annotate(n=Count("id")).order_by()
    return {(str(status), str(reason)): int(n) for status, reason, n in rows}


def bus_status(*, streams: list[str] | None = None) -> BusStatus:
    """The bus now: every partition, or the ``streams`` named. Raises redis.RedisError (or, on a cluster,
    the cluster client's errors) or a database error when a service does not answer."""
    client = get_redis()
    heartbeats = read_heartbeats(client, settings.EVENTING_STREAM)
    by_group: Counter[str] = Counter(
        dict(
            DeadLetter.objects.filter(status=DeadLetter.Status.PENDING)
            .values_list("consumer_group")
            .annotate(n=Count("id"))
            .order_by()
        )
    )
    return BusStatus(
        taken_at=datetime.now(UTC),
        streams=[
            stream_status(client, name, dead_letters=dict(by_group), heartbeats=heartbeats)
            for name in streams or partition_streams()
        ],
        outbox=outbox_status(),
        dead_letters=dead_letter_counts(),
    )


def breaches(
    status: BusStatus,
    *,
    max_lag: int | None = None,
    max_pending_age: float | None = None,
    max_dead_letters: int | None = None,
    min_alive: int | None = None,
) -> list[str]:
    """What in ``status`` crosses the given thresholds (None: not checked), one line each."""
    found = []
    for stream in status.streams:
        for group in stream.groups:
            where = f"{stream.name} {group.name}"
            if max_lag is not None and (group.lag or 0) > max_lag:
                found.append(f"{where}: lag {group.lag} > {max_lag}")
            age = group.oldest_pending_age_seconds
            if max_pending_age is not None and age is not None and age > max_pending_age:
                found.append(f"{where}: oldest pending entry {age:.0f}s old > {max_pending_age:g}s")
            if max_dead_letters is not None and group.dead_letters > max_dead_letters:
                found.append(f"{where}: {group.dead_letters} dead letter(s) pending > {max_dead_letters}")
            if min_alive is not None and group.declared and group.alive < min_alive:
                found.append(f"{where}: {group.alive} consumer(s) alive < {min_alive}")
    return found


def drain_breaches(status: BusStatus) -> list[str]:
    """What keeps the bus from being drained — the first step of repartitioning (docs/scaling.md): a row the
    outbox has not published, an entry a group has not read (or whose lag Redis cannot tell) or not acked,
    on any partition or retry stream of it. Empty when the bus is drained."""
    found = []
    if status.outbox.backlog:
        found.append(f"outbox: {status.outbox.backlog} row(s) not yet published")
    for stream in status.streams:
        for group in stream.groups:
            if not group.exists:
                continue  # a consumer that never ran has nothing in flight (start it with --from-beginning)
            where = f"{stream.name} {group.name}"
            if group.lag is None:
                found.append(f"{where}: lag unknown (Redis cannot tell after a trim); wait for the group to read on")
            elif group.lag:
                found.append(f"{where}: {group.lag} entr(y/ies) not yet read")
            if group.pending:
                found.append(f"{where}: {group.pending} entr(y/ies) read and not acked")
    return found


__all__ = [
    "HEALTH_TTL_SECONDS",
    "BusStatus",
    "GroupStatus",
    "StreamStatus",
    "breaches",
    "bus_status",
    "drain_breaches",
]
