"""Partition ownership: leases with fencing tokens in the real Redis, and the fence in the database."""

import time

import pytest
from django.db import transaction

from eventing.consumer.applying import fence
from eventing.models import ConsumerFence
from eventing.transport.leases import LeaseLost, PartitionLeases, assignment, lease_key, token_key

TTL_MS = 300


def member(redis_client, stream: str, owner: str, partitions: int = 4, token_floors=None) -> PartitionLeases:
    return PartitionLeases(
        client=redis_client,
        group="g",
        base=stream,
        partitions=[f"{{{stream}:p{i}}}" for i in range(partitions)],
        owner=owner,
        ttl_ms=TTL_MS,
        token_floors=token_floors,
    )


def settle(*members: PartitionLeases, rounds: int = 3) -> None:
    for _ in range(rounds):
        for one in members:
            one.rebalance()


def test_the_assignment_is_the_same_for_every_member_and_spreads_partitions_evenly():
    partitions = [f"p{i}" for i in range(8)]
    first = assignment(partitions=partitions, members=["b", "a", "c"])
    assert first == assignment(partitions=partitions, members=["c", "b", "a"])
    counts = {m: list(first.values()).count(m) for m in "abc"}
    assert sorted(counts.values()) == [2, 3, 3]
    assert assignment(partitions=partitions, members=[]) == {}


def test_two_members_split_the_partitions_and_each_partition_has_one_owner(redis_client, stream):
    a, b = member(redis_client, stream, "a"), member(redis_client, stream, "b")
    settle(a, b)
    assert len(a.held) == len(b.held) == 2
    assert set(a.held).isdisjoint(b.held)
    for one in (a, b):
        for partition, lease in one.held.items():
            assert one.check(partition) == lease


def test_a_crashed_member_s_partitions_are_taken_over_within_two_lease_periods_with_newer_tokens(redis_client, stream):
    a, b = member(redis_client, stream, "a"), member(redis_client, stream, "b")
    settle(a, b)
    lost = dict(b.held)
    started = time.monotonic()
    while set(a.held) != set(a.partitions):  # b crashed: it renews nothing from here on
        assert time.monotonic() - started < 2 * TTL_MS / 1000, "not rebalanced within two lease periods"
        time.sleep(TTL_MS / 3000)
        a.rebalance()
    for partition, old in lost.items():
        assert a.held[partition].token > old.token
        with pytest.raises(LeaseLost):
            b.check(partition)  # the paused process finds out before it applies or acks


def test_a_stopped_member_hands_its_partitions_back_at_once(redis_client, stream):
    a, b = member(redis_client, stream, "a"), member(redis_client, stream, "b")
    settle(a, b)
    b.release_all()
    assert not any(redis_client.exists(lease_key(stream=p, group="g")) for p in b.partitions if p not in a.held)
    a.rebalance()
    assert set(a.held) == set(a.partitions)


def test_a_joining_member_gets_its_share_and_the_others_let_go(redis_client, stream):
    a = member(redis_client, stream, "a")
    settle(a)
    assert len(a.held) == 4
    b = member(redis_client, stream, "b")
    settle(b, a, b)
    assert len(a.held) == len(b.held) == 2


@pytest.mark.django_db(transaction=True)
def test_the_database_fence_refuses_a_token_older_than_one_that_has_written():
    with transaction.atomic():
        fence(group="g", stream="s", token=3)
    with transaction.atomic():
        fence(group="g", stream="s", token=3)  # the same owner again
    with transaction.atomic():
        fence(group="g", stream="s", token=5)  # a new owner
    with pytest.raises(LeaseLost), transaction.atomic():
        fence(group="g", stream="s", token=4)  # the old one, back from a pause
    assert ConsumerFence.objects.get(group="g", stream="s").token == 5


def test_a_lease_not_renewed_for_a_ttl_stops_counting_before_redis_could_give_it_to_another(redis_client, stream):
    a = member(redis_client, stream, "a")
    settle(a)
    partition = a.partitions[0]
    assert a.token(partition) == a.held[partition].token
    time.sleep(TTL_MS / 1000)  # no rebalance meanwhile (a pause, or a rebalance that could not reach Redis)
    assert a.holding() == {}
    with pytest.raises(LeaseLost) as lost:
        a.token(partition)
    assert lost.value.partition == partition


def test_renewing_between_batches_keeps_the_leases_and_the_membership_without_a_rebalance(redis_client, stream):
    a, b = member(redis_client, stream, "a"), member(redis_client, stream, "b")
    settle(a, b)
    mine = dict(a.held)
    for _ in range(6):  # two TTLs of renewals only
        time.sleep(TTL_MS / 3000)
        a.renew()
        b.renew()
    assert set(a.holding()) == set(mine) and a.live_members() == ["a", "b"]
    a.rebalance()
    assert a.held == mine  # the same leases, the same tokens: nothing changed hands


def test_a_token_counter_lost_with_its_master_s_data_starts_again_above_the_fence(redis_client, stream):
    fences = {}
    a = member(redis_client, stream, "a", token_floors=lambda streams: {s: fences[s] for s in streams if s in fences})
    settle(a)
    partition = a.partitions[0]
    fences[partition] = a.held[partition].token + 41  # tokens that wrote before, say under earlier owners
    a.release_all()
    redis_client.delete(lease_key(stream=partition, group="g"), token_key(stream=partition, group="g"))
    a.rebalance()
    assert a.held[partition].token == fences[partition] + 1
    # The same owner holding an old token below the fence (its master came back with a stale lease) gets a new one.
    redis_client.set(lease_key(stream=partition, group="g"), f"a:{fences[partition] - 1}", px=TTL_MS)
    a.held.clear()
    a.rebalance()
    assert a.held[partition].token > fences[partition]
