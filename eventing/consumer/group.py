"""The consumer's only conversation with Redis: its group on the main stream and on its own
retry stream, reads, acks, failure counts, claims, the dead-letter copy and the health record.

Entries are read as bytes, exactly as they were written: a stream holds whatever anyone XADDed, and a
client that decodes replies would fail inside the read on the first field that is not UTF-8, before
the entry could be dead-lettered. Turning the bytes into an event is ``decoding``'s job."""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import redis

from eventing.consumer.decoding import Entry
from eventing.consumer.health import HEALTH_TTL_SECONDS, HealthRecord, health_key
from eventing.consumer.policy import Failure
from eventing.transport.client import get_redis
from eventing.transport.streams import dead_letter_stream, retry_stream

logger = logging.getLogger(__name__)


class ConsumerError(Exception):
    """The consumer cannot do what it was asked (a usage error)."""


@dataclass(frozen=True)
class PendingRetry:
    """A failed entry this consumer holds, and how long until its backoff has passed (0 or less: due)."""

    stream: str
    id: str
    wait_ms: float


class GroupIO:
    def __init__(self, *, stream: str, group: str, consumer_id: str, count: int, block_ms: int) -> None:
        self.stream = stream
        self.group = group
        self.consumer_id = consumer_id
        self.count = count
        self.block_ms = block_ms
        self.streams = [stream, retry_stream(stream, group)]
        # The socket must outlive the server-side BLOCK.
        self.redis = get_redis(socket_timeout=block_ms / 1000 + 10)
        # Reads of entries (XREADGROUP, XCLAIM, XAUTOCLAIM) get bytes; the bookkeeping stays text.
        self.raw = get_redis(socket_timeout=block_ms / 1000 + 10, decode_responses=False)
        self.failures_key = f"eventing:failures:{stream}:{group}"
        self.health_key = health_key(stream=stream, group=group, consumer_id=consumer_id)

    # Groups and reads.

    def ensure_group(self) -> None:
        for stream in self.streams:
            try:
                self.redis.xgroup_create(stream, self.group, id="0", mkstream=True)
                logger.info("created consumer group %s on %s", self.group, stream)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def create_group_below_history(self) -> str:
        """Create the group of a consumer that has never run, at the oldest entry the stream still
        holds; returns that boundary (what lies below it must come from the event log)."""
        try:
            self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" in str(exc):
                raise ConsumerError(
                    f"consumer group {self.group} already exists on {self.stream} and has its own position; "
                    "--from-beginning is for a consumer that has never run"
                ) from None
            raise
        self.ensure_group()
        # Created first, so nothing the new group needs can be trimmed from here on.
        info = self.redis.xinfo_stream(self.stream)
        if info["first-entry"]:
            return str(info["first-entry"][0])
        ms, seq = (int(part) for part in info["last-generated-id"].split("-"))
        return f"{ms}-{seq + 1}"

    def read(self, last_id: str | dict[str, str], *, block: bool = True) -> list[Entry]:
        """Entries after ``last_id`` (per stream, or one id for every stream of this consumer):
        "0" for its own pending ones, ">" for new ones, blocking up to BLOCK ms."""
        ids = last_id if isinstance(last_id, dict) else dict.fromkeys(self.streams, last_id)
        try:
            response = self.raw.xreadgroup(
                self.group,
                self.consumer_id,
                ids,  # type: ignore[arg-type]  # redis-py's stub wants a wider dict type
                count=self.count,
                block=self.block_ms if block and ">" in ids.values() else None,
            )
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            logger.warning("stream %s or group %s disappeared; recreating it", self.stream, self.group)
            self.ensure_group()
            return []
        batches = cast(list[tuple[bytes, Any]], response or [])
        return [entry for stream, entries in batches for entry in _entries(stream.decode(), entries)]

    def ack(self, entries: list[Entry]) -> None:
        """Ack the entries and forget their failure counts, in one round trip."""
        if not entries:
            return
        by_stream: dict[str, list[str]] = defaultdict(list)
        for entry in entries:
            by_stream[entry.stream].append(entry.id)
        pipe = self.redis.pipeline(transaction=False)
        for stream, ids in by_stream.items():
            pipe.xack(stream, self.group, *ids)
        pipe.hdel(self.failures_key, *(_failure_field(e.stream, e.id) for e in entries))
        pipe.execute()

    # Failures and retries.

    def count_failure(self, entry: Entry) -> tuple[int, datetime]:
        """One more failed attempt of the entry: (attempts so far, when it first failed)."""
        field = _failure_field(entry.stream, entry.id)
        previous = cast(str | None, self.redis.hget(self.failures_key, field))
        record: dict[str, Any] = (
            json.loads(previous) if previous else {"count": 0, "first": datetime.now(UTC).isoformat()}
        )
        record["count"] += 1
        self.redis.hset(self.failures_key, field, json.dumps(record))
        return int(record["count"]), datetime.fromisoformat(str(record["first"]))

    def pending_retries(self, backoff_ms: Callable[[int], float]) -> list[PendingRetry]:
        """The failed entries this consumer holds, with the time left until each is due again."""
        failures = cast(dict[str, str], self.redis.hgetall(self.failures_key))
        if not failures:
            return []
        found = []
        for stream in self.streams:
            pending = cast(
                list[dict[str, Any]],
                self.redis.xpending_range(
                    stream, self.group, min="-", max="+", count=self.count, consumername=self.consumer_id
                ),
            )
            for item in pending:
                entry_id = str(item["message_id"])
                record = failures.get(_failure_field(stream, entry_id))
                if record:
                    wait = backoff_ms(int(json.loads(record)["count"])) - int(item["time_since_delivered"])
                    found.append(PendingRetry(stream, entry_id, wait))
        return found

    def claim(self, stream: str, ids: list[str]) -> list[Entry]:
        """Deliver these entries of ``stream`` to this consumer again."""
        claimed = self.raw.xclaim(stream, self.group, self.consumer_id, min_idle_time=0, message_ids=list[Any](ids))
        return _entries(stream, claimed)

    def claim_idle(self, idle_ms: int) -> Iterator[list[Entry]]:
        """Batches of the entries other consumers of the group left idle for longer than ``idle_ms``."""
        for stream in self.streams:
            cursor = b"0-0"
            while True:
                cursor, claimed, _deleted = self.raw.xautoclaim(
                    stream, self.group, self.consumer_id, min_idle_time=idle_ms, start_id=cursor, count=self.count
                )
                if claimed:
                    yield _entries(stream, claimed)
                if cursor == b"0-0":
                    break

    def forget_idle_consumers(self, idle_ms: int) -> list[str]:
        """Remove the group's other consumers that hold nothing and have been idle for longer than ``idle_ms``."""
        removed = []
        for stream in self.streams:
            for other in self.redis.xinfo_consumers(stream, self.group):
                if other["name"] != self.consumer_id and other["pending"] == 0 and other["idle"] > idle_ms:
                    self.redis.xgroup_delconsumer(stream, self.group, other["name"])
                    removed.append(f"{other['name']} ({stream})")
        return removed

    def copy_to_dead_letters(self, entry: Entry, failure: Failure) -> str:
        """Copy the entry, byte for byte, to the dead-letter stream (for tools; the table is the record).
        Returns the copy's id; "" when Redis refused the copy for a reason other than being unreachable."""
        fields: dict[Any, Any] = {
            **entry.fields,
            "dead_letter_group": self.group,
            "dead_letter_reason": failure.reason,
            "dead_letter_stream": entry.stream,
        }
        try:
            return str(self.redis.xadd(dead_letter_stream(entry.stream), fields))
        except redis.ResponseError:
            logger.exception(
                "%s: Redis refused the dead-letter copy of entry %s on %s", self.group, entry.id, entry.stream
            )
            return ""

    # Health.

    def write_health(self, record: HealthRecord) -> None:
        """Best effort: when Redis itself is down the record expires, which says the same."""
        try:
            self.redis.set(self.health_key, record.to_json(), ex=HEALTH_TTL_SECONDS)
        except redis.RedisError:
            pass

    def delete_health(self) -> None:
        try:
            self.redis.delete(self.health_key)  # gone, rather than not ready
        except redis.RedisError:
            pass


def _entries(stream: str, response: Any) -> list[Entry]:
    """Entries from a read's or a claim's [(id, fields), ...], in bytes; an entry trimmed away has no fields."""
    pairs = cast(list[tuple[bytes, dict[bytes, bytes] | None]], response)
    return [Entry(stream, entry_id.decode(), fields or {}) for entry_id, fields in pairs]


def _failure_field(stream: str, entry_id: str) -> str:
    return f"{stream} {entry_id}"
