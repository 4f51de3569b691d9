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
Redis Cluster the scripts below touch one slot.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, cast

from redis.commands.core import Script

from eventing.transport.client import RedisClient

# KEYS: lease, token counter. ARGV: owner, ttl ms. Returns the token (the existing one when already held).
_ACQUIRE = """
local held = redis.call('GET', KEYS[1])
if held then
  local owner, token = string.match(held, '^(.*):(%d+)$')
  if owner == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return tonumber(token)
  end
  return false
end
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
    return f"eventing:members:{base}:{group}"


class LeaseLost(Exception):
    """This process no longer holds the partition's lease: it must not apply or ack its entries."""


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
        self, *, client: RedisClient, group: str, base: str, partitions: list[str], owner: str, ttl_ms: int
    ) -> None:
        self.client = client
        self.group = group
        self.partitions = partitions
        self.owner = owner
        self.ttl_ms = ttl_ms
        self.members = members_key(group=group, base=base)
        self.held: dict[str, Lease] = {}
        self._acquire: Script = client.register_script(_ACQUIRE)
        self._renew_or_release: Script = client.register_script(_RENEW_OR_RELEASE)
        self._fenced_ack: Script = client.register_script(_FENCED_ACK)
        self._fenced_read: Script = client.register_script(_FENCED_READ)

    def live_members(self) -> list[str]:
        now = int(time.time() * 1000)
        self.client.zremrangebyscore(self.members, "-inf", now)
        return sorted(str(m) for m in cast(list[Any], self.client.zrangebyscore(self.members, now, "+inf")))

    def rebalance(self) -> dict[str, Lease]:
        """Renew membership and held leases, release what is no longer this process's share, take the free
        partitions that are. Returns the leases held now. Call it every third of the TTL."""
        self.client.zadd(self.members, {self.owner: int(time.time() * 1000) + self.ttl_ms})
        mine = {
            stream
            for stream, member in assignment(partitions=self.partitions, members=self.live_members()).items()
            if member == self.owner
        }
        for stream, lease in list(self.held.items()):
            keep = stream in mine
            if (
                not self._renew_or_release(
                    keys=[lease_key(stream=stream, group=self.group)],
                    args=[f"{self.owner}:{lease.token}", self.ttl_ms if keep else 0],
                )
                or not keep
            ):
                del self.held[stream]
        for stream in sorted(mine - set(self.held)):
            token = self._acquire(
                keys=[lease_key(stream=stream, group=self.group), token_key(stream=stream, group=self.group)],
                args=[self.owner, self.ttl_ms],
            )
            if token is not None:
                self.held[stream] = Lease(stream=stream, token=int(token))
        return dict(self.held)

    def check(self, stream: str) -> Lease:
        """The lease of ``stream`` if this process still holds it (same token); LeaseLost otherwise."""
        lease = self.held.get(stream)
        if (
            lease is None
            or self.client.get(lease_key(stream=stream, group=self.group)) != f"{self.owner}:{lease.token}"
        ):
            self.held.pop(stream, None)
            raise LeaseLost(f"{self.owner} no longer holds {stream} for {self.group}")
        return lease

    def ack(self, *, partition: str, stream: str, ids: list[str]) -> bool:
        """Ack ``ids`` read from ``stream`` (the partition or its retry stream) only while this process still
        holds the partition's lease, in one script call (a cluster pipeline cannot carry scripts); False,
        and nothing acked, when it does not."""
        lease = self.held.get(partition)
        if lease is None:
            return False
        answer = self._fenced_ack(
            keys=[lease_key(stream=partition, group=self.group), stream],
            args=[f"{self.owner}:{lease.token}", self.group, *ids],
        )
        if answer == -1:
            self.held.pop(partition, None)
            return False
        return True

    def read_new(self, *, partition: str, streams: list[str], count: int, client: RedisClient) -> Any:
        """New entries of ``streams`` (the partition and its retry stream) for this process, read only while it
        holds the partition's lease (LeaseLost otherwise): XREADGROUP's reply through ``client`` (a bytes
        client), None when there was nothing."""
        lease = self.held.get(partition)
        if lease is None:
            raise LeaseLost(f"{self.owner} does not hold {partition} for {self.group}")
        reply = self._fenced_read(
            keys=[lease_key(stream=partition, group=self.group), *streams],
            args=[f"{self.owner}:{lease.token}", self.group, self.owner, count],
            client=client,
        )
        if reply == -1:
            self.held.pop(partition, None)
            raise LeaseLost(f"{self.owner} no longer holds {partition} for {self.group}")
        return reply

    def release_all(self) -> None:
        """Hand every partition back at once (a clean stop), and leave the group."""
        for stream, lease in list(self.held.items()):
            self._renew_or_release(
                keys=[lease_key(stream=stream, group=self.group)], args=[f"{self.owner}:{lease.token}", 0]
            )
        self.held.clear()
        self.client.zrem(self.members, self.owner)
