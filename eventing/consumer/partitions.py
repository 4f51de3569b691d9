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

On a cluster each master fails on its own. A partition whose master does not answer is set aside for
``PARTITION_RETRY_SECONDS`` and the consumer carries on with the others (``each``, and the leased reads and
acks); only when none answers does the error reach the loop, which backs off as it does when Redis is down.
With leases, a rebalance drops the leases it cannot renew and keeps the others (``PartitionLeases``). On one
Redis an error is raised at once, as it always was.

Acks of a batch go out in one pipeline whatever partitions they touch (a cluster pipeline sends each
master its share); on one Redis without leases, the live loop's go with its next read (``ack``). The
consumer's health record is one per process, under the bus's hash tag.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any, TypeVar, cast

import redis
from django.conf import settings

from eventing.consumer.applying import fence_tokens
from eventing.consumer.decoding import Entry
from eventing.consumer.group import ConsumerError, GroupIO, read_group
from eventing.consumer.health import HEALTH_TTL_SECONDS, HealthRecord, health_key
from eventing.transport.client import (
    CREDENTIAL_ERRORS,
    REDIS_ERRORS,
    SERVER_DOWN_ERRORS,
    RedisPipeline,
    is_cluster,
    is_missing_key,
)
from eventing.transport.leases import LeaseLost, PartitionLeases
from eventing.transport.streams import base_stream, partition_streams

logger = logging.getLogger(__name__)

# How long an idle consumer on a cluster blocks on one partition before it looks at all of them again:
# the longest an entry on another partition waits for an idle consumer. A tenth of a second keeps that
# wait below the latency of a hop through the database; an idle consumer then makes P + 1 cheap reads
# every tenth of a second.
CLUSTER_IDLE_BLOCK_MS = 100

# With leases, reads do not block (a blocked read would keep receiving entries after its lease moved on),
# so an idle consumer looks again this often: what an event waits at most when everything is idle.
LEASED_IDLE_MS = 20

# How long a partition whose master did not answer is left aside before it is tried again. A master
# restarts in seconds; trying once a second costs one refused connection.
PARTITION_RETRY_SECONDS = 1.0

T = TypeVar("T")


class PartitionsUnavailable(redis.ConnectionError):
    """No partition of the bus answers: the consumer backs off as it does when Redis is down."""


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
        # Every partition of the bus; ``ios`` are those this process reads: all of them, or with leases
        # (several partitions) the ones whose lease it holds.
        self.all_ios = [
            GroupIO(stream=name, group=group, consumer_id=consumer_id, count=count, block_ms=block_ms)
            for name in partition_streams(stream=stream, partitions=partitions)
        ]
        self.ios = list(self.all_ios)
        self._by_stream = {io.stream: io for io in self.all_ios}
        self.redis = self.all_ios[0].redis
        self.raw = self.all_ios[0].raw
        self.leases = (
            PartitionLeases(
                client=self.redis,
                group=group,
                base=stream,
                partitions=[io.stream for io in self.all_ios],
                owner=consumer_id,
                ttl_ms=settings.EVENTING_LEASE_TTL_MS,
                token_floors=lambda streams: fence_tokens(group=group, streams=streams),
            )
            if len(self.all_ios) > 1 and settings.EVENTING_LEASE_TTL_MS > 0
            else None
        )
        if self.leases is not None:
            self.ios = []  # until the first rebalance
        # With leases: the token under which each partition was taken over (``taken_over``) and is still held.
        self._tokens: dict[str, int] = {}
        self._next_rebalance = 0.0
        self._next_renewal = 0.0
        self.one_call = not is_cluster(self.raw)
        self.health_key = health_key(stream=stream, group=group, consumer_id=consumer_id)
        self._turn = 0  # the partition an idle consumer on a cluster blocks on next
        self._down_until: dict[str, float] = {}  # partitions set aside, and until when
        # Entries applied whose acks go with the next read (``ack(with_next_read=True)``).
        self._acks_due: list[Entry] = []
        # Whether the last ``read_new`` found nothing: what the next one finds came after a wait.
        self._found_nothing = False

    @property
    def streams(self) -> list[str]:
        """Every stream this process reads: each of its partitions and this group's retry stream of it."""
        return [name for io in self.ios for name in io.streams]

    def io_of(self, stream: str) -> GroupIO:
        """The partition an entry read from ``stream`` (a partition or a retry stream of one) belongs to. An
        entry from a stream retired by a repartitioning (replayed from the event log) is kept by the first."""
        return self._by_stream.get(base_stream(stream), self.all_ios[0])

    # Leases: which partitions this process reads.

    def rebalance(self, *, force: bool = False) -> list[tuple[GroupIO, int]]:
        """With leases, every third of their TTL (or now, with ``force``): renew them, let go of what is no
        longer this process's share and take what is. Returns the partitions newly taken with their new lease
        tokens (the caller fences them and takes over their pending entries first, then says so with
        ``taken_over``); a partition whose takeover has not been said done is returned again by the next."""
        if self.leases is None or (not force and time.monotonic() < self._next_rebalance):
            return []
        self._next_rebalance = self._next_renewal = time.monotonic() + settings.EVENTING_LEASE_TTL_MS / 3000
        before = {io.stream for io in self.ios}
        held = self.leases.rebalance()
        self.ios = [io for io in self.all_ios if io.stream in held]
        # Taken now: a partition not taken over under the token it is held by (newly held, held again under
        # another token after another process may have held it and left entries pending, or its takeover failed).
        # The same token means nobody else held it meanwhile.
        gained = [
            (io, held[io.stream].token) for io in self.ios if self._tokens.get(io.stream) != held[io.stream].token
        ]
        self._tokens = {stream: token for stream, token in self._tokens.items() if stream in held}
        lost = before - set(held)
        if gained or lost:
            logger.info(
                "%s (%s): partitions now %s (took %s, let go of %s)",
                self.group,
                self.consumer_id,
                [io.stream for io in self.ios] or "none",
                [io.stream for io, _token in gained] or "none",
                sorted(lost) or "none",
            )
        return gained

    def taken_over(self, partition: str, token: int) -> None:
        """``partition``, newly taken under ``token``, is fenced and what was pending on it applied."""
        self._tokens[partition] = token

    def renew_if_due(self) -> None:
        """With leases, between batches: renew the held leases and the membership when a third of the TTL has
        passed since they were last renewed. A takeover's backlog, or a run of claimed or retried entries, is
        applied batch after batch with no read (where rebalances happen) in between."""
        if self.leases is None or time.monotonic() < self._next_renewal:
            return
        self._next_renewal = time.monotonic() + settings.EVENTING_LEASE_TTL_MS / 3000
        self.leases.renew()

    def fencing_tokens(self, entries: list[Entry]) -> dict[str, int]:
        """{partition: this process's lease token} for the partitions of ``entries``, as this process holds them;
        LeaseLost for one it no longer holds. No round trip: the database fence written with the effects is the
        check that a newer owner has not begun. Empty without leases."""
        if self.leases is None:
            return {}
        return {partition: self.leases.token(partition) for partition in {self.io_of(e.stream).stream for e in entries}}

    def forget(self, partition: str | None) -> None:
        """Stop reading ``partition`` until a rebalance takes it again: its fence refused this process's token,
        or taking it over failed half-way. Its lease is let go of (best effort), so the next rebalance takes it
        afresh, with a token above its fence, and takes over what is pending on it first."""
        if self.leases is None or partition is None:
            return
        self.leases.forget(partition)
        self._tokens.pop(partition, None)
        self.ios = [io for io in self.ios if io.stream != partition]

    def release(self) -> None:
        """Hand every partition back at once (a clean stop)."""
        if self.leases is not None:
            try:
                self.leases.release_all()
            except REDIS_ERRORS:
                pass  # they expire within a TTL
            self.ios = []

    # Groups.

    def ensure_groups(self) -> None:
        """On every partition, held or not: a partition taken over later must have the group already (one that
        does not answer gets it when it is taken, or read, next)."""
        self.each(lambda io: io.ensure_group(), every=True)

    # Partitions that do not answer.

    def _answered(self, io: GroupIO, call: Callable[[], T]) -> tuple[bool, T | None]:
        """``call`` on partition ``io``: (True, its result) when the partition answered; (False, None) when it
        did not (on a cluster it is set aside; on one Redis the error is raised) or its stream or group was gone
        (the group is created again)."""
        try:
            result = call()
        except CREDENTIAL_ERRORS:
            raise
        except SERVER_DOWN_ERRORS as exc:  # before ResponseError: CLUSTERDOWN is one too
            if self.one_call:
                raise
            self._set_aside(io, exc)
            return False, None
        except redis.ResponseError as exc:
            # NOGROUP from a read or a claim; "no such key" from XINFO on a stream that is gone.
            if "NOGROUP" not in str(exc) and not is_missing_key(exc):
                raise
            logger.warning("stream %s or group %s disappeared; recreating it", io.stream, self.group)
            io.ensure_group()
            return False, None
        if self._down_until.pop(io.stream, None) is not None:
            logger.info("%s: partition %s answers again", self.group, io.stream)
        return True, result

    def each(
        self, action: Callable[[GroupIO], T], *, only: list[GroupIO] | None = None, every: bool = False
    ) -> list[T]:
        """``action`` on every partition this process reads (of ``only``; with ``every``, on every partition of
        the bus) that is not set aside, in that order: the results of those that answered. A partition whose
        stream or group is gone (its Redis came back without its data) gets its group again and is skipped this
        time. On a cluster a partition that does not answer is set aside and the others carry on; once none of
        those this process reads (with ``every``: none at all) is left, PartitionsUnavailable is raised. On one
        Redis an unavailable server raises at once."""
        results: list[T] = []
        targets = self.all_ios if every else self.ios if only is None else only
        if not targets:
            return results  # this process holds no partition now
        for io in targets:
            if not self.one_call and self._down_until.get(io.stream, 0.0) > time.monotonic():
                continue
            answered, result = self._answered(io, partial(action, io))
            if answered:
                results.append(cast(T, result))
        down, pool = set(self.unavailable()), self.all_ios if every else self.ios
        if not self.one_call and pool and all(io.stream in down for io in pool):
            raise PartitionsUnavailable(f"no partition of {self.stream} answers")
        return results

    def _set_aside(self, io: GroupIO, exc: Exception) -> None:
        if io.stream not in self._down_until:
            logger.warning(
                "%s: partition %s does not answer (%s: %s); reading the others, trying it again every %.0fs",
                self.group,
                io.stream,
                type(exc).__name__,
                exc,
                PARTITION_RETRY_SECONDS,
            )
        self._down_until[io.stream] = time.monotonic() + PARTITION_RETRY_SECONDS

    def unavailable(self) -> list[str]:
        """The partitions set aside now."""
        now = time.monotonic()
        return [stream for stream, until in self._down_until.items() if until > now]

    def not_answering(self) -> list[str]:
        """The partitions set aside now, and with leases those whose lease did not answer (for the health record)."""
        return sorted({*self.unavailable(), *(self.leases.unreachable if self.leases is not None else ())})

    def create_groups_below_history(self) -> dict[str, str]:
        """Create the group of a consumer that has never run on every partition, each at the oldest entry the
        partition still holds: {partition stream: that boundary} (what lies below comes from the event log)."""
        taken = [io.stream for io in self.all_ios if io.has_group()]
        if taken:
            raise ConsumerError(
                f"consumer group {self.group} already exists on {', '.join(taken)} and has its own position; "
                "--from-beginning is for a consumer that has never run"
            )
        return {io.stream: io.create_group_below_history() for io in self.all_ios}

    # Reads and acks.

    def read(self, last_id: str | dict[str, str], *, block: bool = True) -> list[Entry]:
        """Entries after ``last_id`` (per stream, or one id for every stream): "0" for this consumer's own
        pending ones, ">" for new ones, blocking (see the module's docstring) only when nothing came."""
        ids = last_id if isinstance(last_id, dict) else dict.fromkeys(self.streams, last_id)
        if not ids:
            return []  # this process holds no partition now
        if self.leases is not None and set(ids.values()) == {">"}:
            return self._read_leased(block=block)
        if self.one_call:
            return self._read_in_one_call(ids, block=block)
        return self._read_each(ids, block=block)[0]

    def read_new(self) -> tuple[list[Entry], bool]:
        """New entries, waiting for them when none are waiting, and whether the first of them came after a wait
        (``StreamConsumer.read_new`` lingers only then). One pass takes what is waiting: on one Redis a read
        without BLOCK before the blocking one, on a cluster the round of reads ``read`` makes before it blocks
        on one partition. Entries the pass finds right after a read that found nothing (a cluster's block on
        another partition ran out; with leases, whose reads never block, the round before paused) came after a
        wait too."""
        if self.leases is not None:
            entries, blocked = self._read_leased(block=True), False
        elif not (ids := dict.fromkeys(self.streams, ">")):
            return [], False
        elif not self.one_call:
            entries, blocked = self._read_each(ids, block=True)
        else:
            entries, blocked = self._read_in_one_call(ids, block=False), False
            if not entries:
                entries, blocked = self._read_in_one_call(ids, block=True), True
        waited = blocked or self._found_nothing
        self._found_nothing = not entries
        return entries, waited and bool(entries)

    def _read_each(self, ids: dict[str, str], *, block: bool) -> tuple[list[Entry], bool]:
        """A round of non-blocking reads, one per partition, then (with ``block``, when it found nothing) a
        blocking read of one partition; the entries, and whether it blocked."""
        wanted = {io.stream: {name: ids[name] for name in io.streams if name in ids} for io in self.ios}
        in_turn = [io for io in self._in_turn() if wanted[io.stream]]
        batches = self.each(lambda io: io.read(wanted[io.stream], block=False), only=in_turn)
        entries = [entry for batch in batches for entry in batch]
        if entries or not block:
            return entries, False
        answering = [io for io in in_turn if io.stream not in self.unavailable()]
        if not answering:
            return [], False
        self._turn += 1
        wait = self.block_ms if len(self.ios) == 1 else self._idle_block_ms()
        blocked = self.each(lambda io: io.read(wanted[io.stream], block=True, block_ms=wait), only=answering[:1])
        return [entry for batch in blocked for entry in batch], True

    def _read_leased(self, *, block: bool) -> list[Entry]:
        """New entries of the partitions whose lease this process holds, each read only while it holds it
        (``PartitionLeases.read_new``), partition by partition in turn; without BLOCK, so an idle consumer
        waits ``LEASED_IDLE_MS`` between rounds."""
        assert self.leases is not None
        entries: list[Entry] = []
        for io in self._in_turn():
            if not self.one_call and self._down_until.get(io.stream, 0.0) > time.monotonic():
                continue
            read = partial(
                self.leases.read_new, partition=io.stream, streams=io.streams, count=self.count, client=self.raw
            )
            try:
                # Set aside when it does not answer: its lease goes at the next rebalance, which cannot renew it.
                answered, reply = self._answered(io, read)
            except LeaseLost as exc:
                logger.warning("%s: %s", self.group, exc)
                continue
            if not answered:
                continue
            entries += [
                Entry(stream.decode(), entry_id.decode(), dict(zip(flat[::2], flat[1::2], strict=True)))
                for stream, batch in cast(list[Any], reply or [])
                for entry_id, flat in batch
            ]
            if len(entries) >= self.count:
                break
        self._turn += 1
        if not entries and block:
            time.sleep(min(self.block_ms, LEASED_IDLE_MS) / 1000)
        return entries

    def _in_turn(self) -> list[GroupIO]:
        if not self.ios:
            return []
        start = self._turn % len(self.ios)
        return self.ios[start:] + self.ios[:start]

    def _idle_block_ms(self) -> int:
        return min(self.block_ms, CLUSTER_IDLE_BLOCK_MS)

    def _read_in_one_call(self, ids: dict[str, str], *, block: bool) -> list[Entry]:
        """One XREADGROUP of every stream, with the acks due (``ack(with_next_read=True)``) in its round trip."""
        acks, self._acks_due = self._acks_due, []
        try:
            return read_group(
                self.raw,
                self.group,
                self.consumer_id,
                ids,
                count=self.count,
                block_ms=self.block_ms if block else None,
                first=partial(self._queue_acks, acks, forget_failures=False) if acks else None,
            )
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                self._acks_due = acks + self._acks_due
                raise
            # Gone with the group: the acks due, too.
            logger.warning("a stream of %s or its group %s disappeared; recreating it", self.stream, self.group)
            self.ensure_groups()
            return []
        except Exception:
            # Whether they were acked is not known: they are sent again (XACK of an acked entry does nothing) with
            # the next read, before it could return them as pending.
            self._acks_due = acks + self._acks_due
            raise

    def ack(self, entries: list[Entry], *, forget_failures: bool = True, with_next_read: bool = False) -> None:
        """Ack the entries and forget their failure counts, in one round trip (on a cluster, one per master).
        Without ``forget_failures`` the counts are left: the caller knows none of the entries has one.

        ``with_next_read`` (the live loop, after a batch it applied): on one Redis without leases, the acks of
        entries without failure counts go with the next read, in its round trip (a batch then costs Redis one
        round trip instead of two: 0.43 against 0.55 ms per 100 entries here). Until then the entries stay
        pending under this consumer: should it die first, they are delivered again, as when it dies before
        any ack, and the inbox or an idempotent handler recognises them. Every read on one Redis, every ack
        and ``flush_acks`` sends the acks due first, and keeps them due when its round trip fails; the live
        loop ends with ``flush_acks``."""
        if with_next_read and not forget_failures and self.leases is None and self.one_call:
            self._acks_due += entries
            return
        due, self._acks_due = self._acks_due, []
        if not entries and not due:
            return
        pipe = self.redis.pipeline(transaction=False)
        self._queue_acks(due, pipe, forget_failures=False)
        if self.leases is None:
            self._queue_acks(entries, pipe, forget_failures=forget_failures)
            try:
                pipe.execute()
            except Exception:
                # As after a failed read: whether they were acked is not known, so the acks due go again with
                # the next read or ack (a re-read of this consumer's pending entries then finds none of them).
                self._acks_due = due + self._acks_due
                raise
            return
        for partition, part in self._by_partition(entries).items():
            by_stream: dict[str, list[str]] = defaultdict(list)
            for entry in part:
                by_stream[entry.stream].append(entry.id)
            try:
                for stream, ids in by_stream.items():
                    if not self.leases.ack(partition=partition, stream=stream, ids=ids):
                        logger.warning(
                            "%s: %d entries of %s not acked: its lease moved on", self.group, len(ids), partition
                        )
            except CREDENTIAL_ERRORS:
                raise
            except SERVER_DOWN_ERRORS as exc:
                if self.one_call:
                    raise
                # Applied and not acked: they stay pending, and whoever takes the partition next recognises them.
                logger.warning("%s: entries of %s not acked: its master does not answer", self.group, partition)
                self._set_aside(self._by_stream[partition], exc)
                continue
            if forget_failures:
                self._by_stream[partition].forget_failures(part, pipe=pipe)
        pipe.execute()

    def flush_acks(self) -> None:
        """Send the acks due now (the live loop's last batch)."""
        self.ack([])

    def _queue_acks(self, entries: list[Entry], pipe: RedisPipeline, *, forget_failures: bool) -> None:
        """Queue on ``pipe`` the acks of ``entries`` (and forgetting their failure counts), partition by partition."""
        for partition, part in self._by_partition(entries).items():
            self._by_stream[partition].ack(part, pipe=pipe, forget_failures=forget_failures)

    def _by_partition(self, entries: list[Entry]) -> dict[str, list[Entry]]:
        """``entries`` by the partition they belong to, each partition's in the order read from each stream."""
        read_from: dict[str, list[Entry]] = defaultdict(list)
        for entry in entries:
            read_from[entry.stream].append(entry)
        by_partition: dict[str, list[Entry]] = defaultdict(list)
        for stream, read in read_from.items():
            by_partition[self.io_of(stream).stream] += read
        return by_partition

    def claim_idle(self, idle_ms: int) -> Iterator[list[Entry]]:
        """Batches of the entries other consumers of the group left idle on any partition for over ``idle_ms``."""
        for claimed in self.each(lambda io: list(io.claim_idle(idle_ms))):
            yield from claimed

    def forget_idle_consumers(self, idle_ms: int) -> list[str]:
        return [removed for found in self.each(lambda io: io.forget_idle_consumers(idle_ms)) for removed in found]

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
