"""The consumer's conversation with Redis about one partition: its group on the partition stream and on
its own retry stream of it, reads, acks, failure counts, claims and the dead-letter copy. Every key here
embeds the partition's name, so on a Redis Cluster they share its hash tag and each command stays in one
slot. How a consumer reads several partitions is ``partitions``' business.

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
from redis.cluster import RedisCluster

from eventing.consumer.decoding import Entry
from eventing.consumer.policy import Failure
from eventing.transport.client import RedisClient, RedisPipeline, get_redis, is_missing_key
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
    """One partition as one consumer of a group sees it: the partition stream and the group's retry stream
    of it, read together (one XREADGROUP: they share the partition's hash tag)."""

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

    # Groups and reads.

    def ensure_group(self) -> None:
        for stream in self.streams:
            try:
                self.redis.xgroup_create(stream, self.group, id="0", mkstream=True)
                logger.info("created consumer group %s on %s", self.group, stream)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def has_group(self) -> bool:
        try:
            return any(str(info["name"]) == self.group for info in self.redis.xinfo_groups(self.stream))
        except redis.ResponseError as exc:
            if not is_missing_key(exc):
                raise
            return False

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

    def read(self, last_id: str | dict[str, str], *, block: bool = True, block_ms: int | None = None) -> list[Entry]:
        """Entries after ``last_id`` (per stream, or one id for both streams of this partition):
        "0" for its own pending ones, ">" for new ones, blocking up to ``block_ms`` (default: BLOCK ms)."""
        ids = last_id if isinstance(last_id, dict) else dict.fromkeys(self.streams, last_id)
        wait = (self.block_ms if block_ms is None else block_ms) if block else None
        try:
            return read_group(self.raw, self.group, self.consumer_id, ids, count=self.count, block_ms=wait)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            logger.warning("stream %s or group %s disappeared; recreating it", self.stream, self.group)
            self.ensure_group()
            return []

    def ack(self, entries: list[Entry], *, pipe: RedisPipeline, forget_failures: bool = True) -> None:
        """Queue on ``pipe`` the acks of these entries of this partition, and (``forget_failures``) forgetting
        their failure counts."""
        if not entries:
            return
        by_stream: dict[str, list[str]] = defaultdict(list)
        for entry in entries:
            by_stream[entry.stream].append(entry.id)
        for stream, ids in by_stream.items():
            pipe.xack(stream, self.group, *ids)
        if forget_failures:
            self.forget_failures(entries, pipe=pipe)

    def forget_failures(self, entries: list[Entry], *, pipe: RedisPipeline) -> None:
        """Queue on ``pipe`` forgetting the failure counts of these entries of this partition."""
        if entries:
            pipe.hdel(self.failures_key, *(_failure_field(e.stream, e.id) for e in entries))

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


def read_group(
    raw: RedisClient,
    group: str,
    consumer_id: str,
    ids: dict[str, str],
    *,
    count: int,
    block_ms: int | None,
    first: Callable[[RedisPipeline], None] | None = None,
) -> list[Entry]:
    """One XREADGROUP of ``ids`` (stream -> last id), as bytes; BLOCK only when a new entry is asked for.
    ``first`` (one Redis only) queues commands on a pipeline that the read ends, so they share its round trip
    (the last batch's acks); an error of theirs is raised after the read. On a cluster every stream of one call
    must share a slot, and the call goes to that slot's master. (redis-py would first ask its default node which
    keys an XREADGROUP names, COMMAND GETKEYS, since the command's keys move: with that node down, no partition
    could be read, on whichever master it lives.)"""
    block = block_ms if block_ms is not None and ">" in ids.values() else None
    if not isinstance(raw, RedisCluster):
        if first is None:
            response = raw.xreadgroup(group, consumer_id, ids, count=count, block=block)  # type: ignore[arg-type]
        else:
            pipe = raw.pipeline(transaction=False)
            first(pipe)
            pipe.xreadgroup(group, consumer_id, ids, count=count, block=block)  # type: ignore[arg-type]
            response = pipe.execute()[-1]
    else:
        if first is not None:
            raise ValueError("commands go with a read on one Redis only: a cluster's may live on other masters")
        command: list[Any] = ["XREADGROUP", "GROUP", group, consumer_id, "COUNT", count]
        if block is not None:
            command += ["BLOCK", block]
        command += ["STREAMS", *ids, *ids.values()]
        node = raw.get_node_from_key(next(iter(ids)))  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
        response = raw.execute_command(*command, target_nodes=node)  # type: ignore[no-untyped-call]
    batches = cast(list[tuple[bytes, Any]], response or [])
    return [entry for stream, entries in batches for entry in _entries(stream.decode(), entries)]


def _entries(stream: str, response: Any) -> list[Entry]:
    """Entries from a read's or a claim's [(id, fields), ...], in bytes; an entry trimmed away has no fields."""
    pairs = cast(list[tuple[bytes, dict[bytes, bytes] | None]], response)
    return [Entry(stream, entry_id.decode(), fields or {}) for entry_id, fields in pairs]


def _failure_field(stream: str, entry_id: str) -> str:
    return f"{stream} {entry_id}"
