"""Which process of a consumer group owns which partition: leases in Redis, with fencing tokens.

N processes of one group split the P partition streams among themselves:

- Each process is a **member** while it renews its entry in the group's member set (a sorted set scored
  by expiry) every third of ``ttl_ms``; a crashed one drops out when its entry expires.
- Every member computes the same **assignment** from the sorted list of live members: partition ``i``
  goes to member ``i mod N``. Each releases the leases it should no longer hold and takes the free ones
  it should, so a join, a leave or a crash settles within two lease periods (the dead member's entry
  and leases expire within one; the others take over at their next renewal).
- A **lease** is a key holding ``owner:token`` with a TTL. Taking a free lease increments the
  partition's token counter, so every new owner gets a larger **fencing token** than any before it.
- Before it applies or acks anything, a holder proves the lease is still its own with that token:
  ``check`` in Redis, and for database effects the token is written into ``ConsumerFence`` in the same
  transaction as the effect (``eventing.consumer.applying``), which refuses a token older than one
  already written — so a process that was paused past its lease cannot commit after the new owner began.

Every key of a partition's lease embeds the partition's stream name and so shares its hash tag: on a
Redis Cluster the scripts below touch one slot, and a lease lives on the master of its partition. The
group's member set is kept under the bus's hash tag (with the consumers' health records), so it lives on
one master of its own choosing.

On a Redis Cluster each master fails on its own, and a rebalance carries on without the ones that do not
answer (``rebalance``): a lease it cannot renew is dropped at once — the process stops applying that
partition well before the lease could expire and pass to another — and a partition it cannot take is
left for the next round; while the member set does not answer, every member keeps the assignment it
last computed, renewing and retaking its share. On one Redis an error is raised at once, as it always was.

A lost counter (its master back without its data) must not hand out tokens older than some that have
already written: a rebalance can be given ``token_floors``, the newest token each partition has written
(the database fence), and a new token is always above it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from eventing.transport.client import CREDENTIAL_ERRORS, SERVER_DOWN_ERRORS, LuaScript, RedisClient, is_cluster
from eventing.transport.streams import bus_tag

logger = logging.getLogger(__name__)

# KEYS: lease, token counter. ARGV: owner, ttl ms, floor. Returns the token (the existing one when already held,
# unless it is below the floor), always above the floor: a counter lost or set back with its master's data
# must not hand out a token older than one that has already written.
_ACQUIRE = """
local floor = tonumber(ARGV[3])
local held = redis.call('GET', KEYS[1])
if held then
  local owner, token = string.match(held, '^(.*):(%d+)$')
  if owner ~= ARGV[1] then return false end
  if tonumber(token) >= floor then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return tonumber(token)
  end
end
if tonumber(redis.call('GET', KEYS[2]) or '0') < floor then redis.call('SET', KEYS[2], floor) end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. token, 'PX', ARGV[2])
return token
"""
# KEYS: lease. ARGV: owner:token, ttl ms (0: release). Returns 1 when it was held as said.
_RENEW_OR_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) else redis.call('DEL', KEYS[1]) end
return 1
"""

# KEYS: lease, stream. ARGV: owner:token, group, ids... Acks only while the lease is held as said (-1 if not):
# a process that lost its lease must not ack entries its successor has claimed and not yet applied.
_FENCED_ACK = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
return redis.call('XACK', KEYS[2], ARGV[2], unpack(ARGV, 3))
"""

# KEYS: lease, then the streams to read. ARGV: owner:token, group, consumer, count. Reads new entries only
# while the lease is held as said (-1 if not): with a blocking read a paused process would keep receiving
# entries after its lease moved on, which its successor would then apply out of order.
_FENCED_READ = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local args = {'GROUP', ARGV[2], ARGV[3], 'COUNT', ARGV[4], 'STREAMS'}
for i = 2, #KEYS do table.insert(args, KEYS[i]) end
for i = 2, #KEYS do table.insert(args, '>') end
return redis.call('XREADGROUP', unpack(args))
"""


def lease_key(*, stream: str, group: str) -> str:
    return f"eventing:lease:{stream}:{group}"


def token_key(*, stream: str, group: str) -> str:
    return f"eventing:lease-token:{stream}:{group}"


def members_key(*, group: str, base: str) -> str:
    """The group's member set, under the bus's hash tag (``base`` is the bus's stream): one slot, whatever
    the stream's name, beside the consumers' health records."""
    return f"eventing:members:{bus_tag(base)}:{group}"


class LeaseLost(Exception):
    """This process no longer holds the partition's lease: it must not apply or ack its entries."""

    def __init__(self, message: str, *, partition: str | None = None) -> None:
        super().__init__(message)
        self.partition = partition  # the partition concerned, when one is


@dataclass(frozen=True)
class Lease:
    stream: str
    token: int


def assignment(*, partitions: list[str], members: list[str]) -> dict[str, str]:
    """Partition -> member: the i-th partition to the (i mod N)-th member, members sorted."""
    ordered = sorted(members)
    return {stream: ordered[i % len(ordered)] for i, stream in enumerate(partitions)} if ordered else {}


class PartitionLeases:
    """One process's view of its group's partitions: membership, the leases it holds, rebalancing."""

    def __init__(
        self,
        *,
        client: RedisClient,
        group: str,
        base: str,
        partitions: list[str],
        owner: str,
        ttl_ms: int,
        token_floors: Callable[[list[str]], Mapping[str, int]] | None = None,
    ) -> None:
        self.client = client
        self.group = group
        self.partitions = partitions
        self.owner = owner
        self.ttl_ms = ttl_ms
        self.members = members_key(group=group, base=base)
        self.held: dict[str, Lease] = {}
        # The newest token that has written per partition (the database fence), asked only when taking one.
        self.token_floors = token_floors
        # On a cluster a master that does not answer costs only its own partitions (or the member set).
        self.partial_outages = is_cluster(client)
        # When each held lease stops being this process's, by this process's clock: the start of the call that
        # last set its TTL, plus the TTL (Redis counted from later, so it expires there after this).
        self._valid_until: dict[str, float] = {}
        # This process's share as last computed: kept while the member set does not answer.
        self._share: set[str] = set()
        self._members_down = False
        self.unreachable: set[str] = set()  # partitions whose lease did not answer in the last rebalance
        self._acquire = LuaScript(client, _ACQUIRE)
        self._renew_or_release = LuaScript(client, _RENEW_OR_RELEASE)
        self._fenced_ack = LuaScript(client, _FENCED_ACK)
        self._fenced_read = LuaScript(client, _FENCED_READ)

    def live_members(self) -> list[str]:
        now = int(time.time() * 1000)
        self.client.zremrangebyscore(self.members, "-inf", now)
        return sorted(str(m) for m in cast(list[Any], self.client.zrangebyscore(self.members, now, "+inf")))

    def rebalance(self) -> dict[str, Lease]:
        """Renew the held leases, renew membership, release what is no longer this process's share and take the
        free partitions that are. Returns the leases held now. Call it every third of the TTL.

        The held leases are renewed first, so a member set slow to answer costs none of them. On a cluster, a
        partition whose lease does not answer is skipped for this round (and a held one dropped: it cannot be
        renewed, so it is treated as lost before it expires); a member set that does not answer leaves this
        process with the share it last computed. On one Redis the error is raised."""
        unreachable = self._renew_held()
        share = self._current_share()
        for stream, lease in list(self.held.items()):
            if stream not in share:
                self._release(stream, lease)
        wanted = sorted(share - set(self.held) - unreachable)
        floors = self.token_floors(wanted) if wanted and self.token_floors else {}
        for stream in wanted:
            started = time.monotonic()
            try:
                token = self._acquire(
                    keys=[lease_key(stream=stream, group=self.group), token_key(stream=stream, group=self.group)],
                    args=[self.owner, self.ttl_ms, floors.get(stream, 0)],
                )
            except CREDENTIAL_ERRORS:
                raise
            except SERVER_DOWN_ERRORS as exc:
                if not self.partial_outages:
                    raise
                self._not_answering(stream, exc, unreachable, "will take it when it answers")
                continue
            if token is not None:
                self.held[stream] = Lease(stream=stream, token=int(token))
                self._valid_until[stream] = started + self.ttl_ms / 1000
        for stream in sorted(self.unreachable - unreachable):
            logger.info("%s (%s): the lease of %s answers again", self.group, self.owner, stream)
        self.unreachable = unreachable
        self._prune()
        return dict(self.held)

    def renew(self) -> None:
        """Renew the held leases and this process's membership, and change nothing else: between the batches of
        a long piece of work (a takeover's backlog), so that neither expires before the next rebalance."""
        self.unreachable |= self._renew_held()
        self._renew_membership()

    def _renew_held(self) -> set[str]:
        """Renew every held lease, dropping those it cannot; returns those that did not answer (on a cluster)."""
        unreachable: set[str] = set()
        for stream, lease in list(self.held.items()):
            started = time.monotonic()
            try:
                renewed = self._renew_or_release(
                    keys=[lease_key(stream=stream, group=self.group)],
                    args=[f"{self.owner}:{lease.token}", self.ttl_ms],
                )
            except CREDENTIAL_ERRORS:
                raise
            except SERVER_DOWN_ERRORS as exc:
                self._drop(stream)
                if not self.partial_outages:
                    raise
                self._not_answering(stream, exc, unreachable, "dropped its lease")
                continue
            if renewed:
                self._valid_until[stream] = started + self.ttl_ms / 1000
            else:
                self._drop(stream)  # it expired, or another process holds it now
        self._prune()  # renewed before a pause that outlasted them: taken again (or not) like any other
        return unreachable

    def _prune(self) -> None:
        """Drop the held leases past their deadline."""
        now = time.monotonic()
        for stream in [stream for stream in self.held if self._valid_until.get(stream, 0.0) <= now]:
            self._drop(stream)

    def _current_share(self) -> set[str]:
        """Renew this process's membership and compute its share from the live members; on a cluster, while
        the member set does not answer, the share last computed (every member keeps its own, so they stay
        disjoint; a join or a crash waits for the member set)."""
        members = self._renew_membership(then_list=True)
        if members is None:
            return self._share
        self._share = {
            stream
            for stream, member in assignment(partitions=self.partitions, members=members).items()
            if member == self.owner
        }
        return self._share

    def _renew_membership(self, *, then_list: bool = False) -> list[str] | None:
        """Renew this process's membership and, with ``then_list``, read the live members (else []); None when,
        on a cluster, the member set does not answer."""
        try:
            self.client.zadd(self.members, {self.owner: int(time.time() * 1000) + self.ttl_ms})
            members = self.live_members() if then_list else []
        except CREDENTIAL_ERRORS:
            raise
        except SERVER_DOWN_ERRORS as exc:
            if not self.partial_outages:
                raise
            self._members_unanswered(exc)
            return None
        if self._members_down:
            logger.info("%s (%s): the member set answers again", self.group, self.owner)
            self._members_down = False
        return members

    def _members_unanswered(self, exc: Exception) -> None:
        if not self._members_down:
            logger.warning(
                "%s (%s): the member set %s does not answer (%s: %s); keeping the partitions assigned last (%s) "
                "and trying it again at every rebalance",
                self.group,
                self.owner,
                self.members,
                type(exc).__name__,
                exc,
                sorted(self._share) or "none",
            )
        self._members_down = True

    def _not_answering(self, stream: str, exc: Exception, unreachable: set[str], what: str) -> None:
        unreachable.add(stream)
        if stream not in self.unreachable:
            logger.warning(
                "%s (%s): the lease of %s does not answer (%s: %s); %s",
                self.group,
                self.owner,
                stream,
                type(exc).__name__,
                exc,
                what,
            )

    def _release(self, stream: str, lease: Lease) -> None:
        """Let go of a lease: deleted if still held as said (best effort on a cluster: else it expires)."""
        self._drop(stream)
        try:
            self._renew_or_release(
                keys=[lease_key(stream=stream, group=self.group)], args=[f"{self.owner}:{lease.token}", 0]
            )
        except CREDENTIAL_ERRORS:
            raise
        except SERVER_DOWN_ERRORS:
            if not self.partial_outages:
                raise

    def _drop(self, stream: str) -> None:
        self.held.pop(stream, None)
        self._valid_until.pop(stream, None)

    def holding(self) -> dict[str, Lease]:
        """The leases this process may act on now: held, and not past their deadline (no round trip)."""
        now = time.monotonic()
        return {stream: lease for stream, lease in self.held.copy().items() if self._valid_until.get(stream, 0.0) > now}

    def _valid(self, stream: str) -> Lease | None:
        """The lease of ``stream`` while this process may still act on it: held, and not past the TTL since it
        was last renewed (a rebalance that came too late, or a pause)."""
        lease = self.held.get(stream)
        if lease is not None and time.monotonic() >= self._valid_until.get(stream, 0.0):
            self._drop(stream)
            return None
        return lease

    def token(self, stream: str) -> int:
        """This process's token for ``stream``, as it holds the lease (no round trip); LeaseLost if it does not."""
        lease = self._valid(stream)
        if lease is None:
            raise LeaseLost(f"{self.owner} no longer holds {stream} for {self.group}", partition=stream)
        return lease.token

    def forget(self, stream: str) -> None:
        """Let go of ``stream`` after its fence refused this process's token (a newer one has written, or the
        counter was lost): released if still held as said, so the next rebalance takes it afresh, above the
        fence. Best effort: a lease that cannot be released expires."""
        lease = self.held.get(stream)
        if lease is None:
            return
        try:
            self._release(stream, lease)
        except CREDENTIAL_ERRORS:
            raise
        except SERVER_DOWN_ERRORS:
            pass  # dropped here; it expires there

    def check(self, stream: str) -> Lease:
        """The lease of ``stream`` if this process still holds it (same token); LeaseLost otherwise."""
        lease = self._valid(stream)
        if (
            lease is None
            or self.client.get(lease_key(stream=stream, group=self.group)) != f"{self.owner}:{lease.token}"
        ):
            self._drop(stream)
            raise LeaseLost(f"{self.owner} no longer holds {stream} for {self.group}", partition=stream)
        return lease

    def ack(self, *, partition: str, stream: str, ids: list[str]) -> bool:
        """Ack ``ids`` read from ``stream`` (the partition or its retry stream) only while this process still
        holds the partition's lease, in one script call (a cluster pipeline cannot carry scripts); False,
        and nothing acked, when it does not."""
        lease = self._valid(partition)
        if lease is None:
            return False
        answer = self._fenced_ack(
            keys=[lease_key(stream=partition, group=self.group), stream],
            args=[f"{self.owner}:{lease.token}", self.group, *ids],
        )
        if answer == -1:
            self._drop(partition)
            return False
        return True

    def read_new(self, *, partition: str, streams: list[str], count: int, client: RedisClient) -> Any:
        """New entries of ``streams`` (the partition and its retry stream) for this process, read only while it
        holds the partition's lease (LeaseLost otherwise): XREADGROUP's reply through ``client`` (a bytes
        client), None when there was nothing."""
        lease = self._valid(partition)
        if lease is None:
            raise LeaseLost(f"{self.owner} does not hold {partition} for {self.group}", partition=partition)
        reply = self._fenced_read(
            keys=[lease_key(stream=partition, group=self.group), *streams],
            args=[f"{self.owner}:{lease.token}", self.group, self.owner, count],
            client=client,
        )
        if reply == -1:
            self._drop(partition)
            raise LeaseLost(f"{self.owner} no longer holds {partition} for {self.group}", partition=partition)
        return reply

    def release_all(self) -> None:
        """Hand every partition back at once (a clean stop), and leave the group. On a cluster, what does not
        answer is left to expire."""
        for stream, lease in list(self.held.items()):
            self._release(stream, lease)
        try:
            self.client.zrem(self.members, self.owner)
        except CREDENTIAL_ERRORS:
            raise
        except SERVER_DOWN_ERRORS:
            if not self.partial_outages:
                raise
