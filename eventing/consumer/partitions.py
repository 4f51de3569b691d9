"""The partitions one consumer of a group reads, and the one place that decides how a read spans them.

A consumer process of group G reads every partition stream of the bus (``streams.partition_streams``),
each with G's retry stream of it, through one ``GroupIO`` per partition. Which partitions those are is
decided here and nowhere else, so narrowing them (a consumer holding only some partitions) changes
this class alone.

How a read spans them depends on the server:

- **One Redis**: every partition and retry stream in one XREADGROUP, blocking up to BLOCK ms when it
  asks for new entries — with one partition, exactly the read of an unpartitioned bus.
- **Redis Cluster**: streams of different slots never share a call (CROSSSLOT), and each partition is a
  slot of its own. A read is a round of non-blocking reads, one per partition; only when the round finds
  nothing does it block, on one partition, taken in turn, for at most ``CLUSTER_IDLE_BLOCK_MS`` — so an
  idle consumer neither blocks P times per loop nor leaves an entry on another partition waiting for long.

Acks of a batch go out in one pipeline whatever partitions they touch (a cluster pipeline sends each
master its share). The consumer's health record is one per process, under the bus's hash tag.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator

import redis

from eventing.consumer.decoding import Entry
from eventing.consumer.group import ConsumerError, GroupIO, read_group
from eventing.consumer.health import HEALTH_TTL_SECONDS, HealthRecord, health_key
from eventing.transport.client import REDIS_ERRORS, is_cluster
from eventing.transport.streams import base_stream, partition_streams

logger = logging.getLogger(__name__)

# How long an idle consumer on a cluster blocks on one partition before it looks at all of them again:
# the longest an entry on another partition waits for an idle consumer. A tenth of a second keeps that
# wait below the latency of a hop through the database; an idle consumer then makes P + 1 cheap reads
# every tenth of a second.
CLUSTER_IDLE_BLOCK_MS = 100


class Partitions:
    """The partitions of ``stream`` (the bus's base stream) that one consumer of ``group`` reads."""

    def __init__(
        self, *, stream: str, partitions: int, group: str, consumer_id: str, count: int, block_ms: int
    ) -> None:
        self.stream = stream
        self.group = group
        self.consumer_id = consumer_id
        self.count = count
        self.block_ms = block_ms
        self.ios = [
            GroupIO(stream=name, group=group, consumer_id=consumer_id, count=count, block_ms=block_ms)
            for name in partition_streams(stream=stream, partitions=partitions)
        ]
        self._by_stream = {io.stream: io for io in self.ios}
        # Every stream read: each partition and this group's retry stream of it.
        self.streams = [name for io in self.ios for name in io.streams]
        self.redis = self.ios[0].redis
        self.raw = self.ios[0].raw
        self.one_call = not is_cluster(self.raw)
        self.health_key = health_key(stream=stream, group=group, consumer_id=consumer_id)
        self._turn = 0  # the partition an idle consumer on a cluster blocks on next

    def io_of(self, stream: str) -> GroupIO:
        """The partition an entry read from ``stream`` (a partition or a retry stream of one) belongs to. An
        entry from a stream retired by a repartitioning (replayed from the event log) is kept by the first."""
        return self._by_stream.get(base_stream(stream), self.ios[0])

    # Groups.

    def ensure_groups(self) -> None:
        for io in self.ios:
            io.ensure_group()

    def create_groups_below_history(self) -> dict[str, str]:
        """Create the group of a consumer that has never run on every partition, each at the oldest entry the
        partition still holds: {partition stream: that boundary} (what lies below comes from the event log)."""
        taken = [io.stream for io in self.ios if io.has_group()]
        if taken:
            raise ConsumerError(
                f"consumer group {self.group} already exists on {', '.join(taken)} and has its own position; "
                "--from-beginning is for a consumer that has never run"
            )
        return {io.stream: io.create_group_below_history() for io in self.ios}

    # Reads and acks.

    def read(self, last_id: str | dict[str, str], *, block: bool = True) -> list[Entry]:
        """Entries after ``last_id`` (per stream, or one id for every stream): "0" for this consumer's own
        pending ones, ">" for new ones, blocking (see the module's docstring) only when nothing came."""
        ids = last_id if isinstance(last_id, dict) else dict.fromkeys(self.streams, last_id)
        if self.one_call:
            return self._read_in_one_call(ids, block=block)
        wanted = [(io, {name: ids[name] for name in io.streams if name in ids}) for io in self._in_turn()]
        wanted = [(io, io_ids) for io, io_ids in wanted if io_ids]
        entries = [entry for io, io_ids in wanted for entry in io.read(io_ids, block=False)]
        if entries or not block or not wanted:
            return entries
        io, io_ids = wanted[0]
        self._turn += 1
        return io.read(io_ids, block=True, block_ms=self.block_ms if len(self.ios) == 1 else self._idle_block_ms())

    def _in_turn(self) -> list[GroupIO]:
        start = self._turn % len(self.ios)
        return self.ios[start:] + self.ios[:start]

    def _idle_block_ms(self) -> int:
        return min(self.block_ms, CLUSTER_IDLE_BLOCK_MS)

    def _read_in_one_call(self, ids: dict[str, str], *, block: bool) -> list[Entry]:
        try:
            return read_group(
                self.raw, self.group, self.consumer_id, ids, count=self.count, block_ms=self.block_ms if block else None
            )
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            logger.warning("a stream of %s or its group %s disappeared; recreating it", self.stream, self.group)
            self.ensure_groups()
            return []

    def ack(self, entries: list[Entry]) -> None:
        """Ack the entries and forget their failure counts, in one round trip (on a cluster, one per master)."""
        if not entries:
            return
        by_partition: dict[str, list[Entry]] = defaultdict(list)
        for entry in entries:
            by_partition[self.io_of(entry.stream).stream].append(entry)
        pipe = self.redis.pipeline(transaction=False)
        for stream, part in by_partition.items():
            self._by_stream[stream].ack(part, pipe=pipe)
        pipe.execute()

    def claim_idle(self, idle_ms: int) -> Iterator[list[Entry]]:
        """Batches of the entries other consumers of the group left idle on any partition for over ``idle_ms``."""
        for io in self.ios:
            yield from io.claim_idle(idle_ms)

    def forget_idle_consumers(self, idle_ms: int) -> list[str]:
        return [removed for io in self.ios for removed in io.forget_idle_consumers(idle_ms)]

    # Health.

    def write_health(self, record: HealthRecord) -> None:
        """Best effort: when Redis itself is down the record expires, which says the same."""
        try:
            self.redis.set(self.health_key, record.to_json(), ex=HEALTH_TTL_SECONDS)
        except REDIS_ERRORS:
            pass

    def delete_health(self) -> None:
        try:
            self.redis.delete(self.health_key)  # gone, rather than not ready
        except REDIS_ERRORS:
            pass
