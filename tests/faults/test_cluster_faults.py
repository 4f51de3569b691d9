"""F10: a master of a Redis Cluster without replicas killed under load, restarted from its AOF, then killed
again and restarted without its data (a lost disk). The bus runs on six partitions over three masters of the
test's own. What the master's partitions lost comes back from the outbox: the relay notices that master's new
run id and re-publishes what was published to its partitions since the last entry that survived there."""

import json
import random
import re
import signal
import threading
import time

from django.conf import settings

from tests.e2e.invariants import check_invariants
from tests.e2e.system import System
from tests.e2e.test_order_flow import make_orders
from tests.faults.conftest import report

STOCK = {"HOT-1": 200, "HOT-2": 150, "COOL-1": 400}
PARTITIONS = 6
CLUSTER_ENV = {
    "EVENTING_PARTITIONS": str(PARTITIONS),
    "EVENTING_TRIM_INTERVAL_SECONDS": "3600",  # nothing trimmed: the streams show what survived
    # One process per group, so no partition changes hands: this test is about the cluster losing a master.
    # (With leases on, a lease or the member set living on the killed master stalled a consumer in two full
    # suite runs: a known gap, see docs/scaling.md.)
    "EVENTING_LEASE_TTL_MS": "0",
}


def republished(system: System) -> int:
    """Events the relay re-published after a restart, from its log."""
    return sum(int(n) for n in re.findall(r"re-published (\d+) event\(s\)", system.log("relay")))


def snapshot(system: System, streams: list[str]) -> dict[str, tuple[int, str]]:
    """(length, last id) of each stream."""
    return {s: (system.redis.xlen(s), system.redis.xinfo_stream(s)["last-generated-id"]) for s in streams}


def survived(system: System, before: dict[str, tuple[int, str]]) -> int:
    """Entries among those the streams held at ``before`` that are still there."""
    return sum(len(system.redis.xrange(s, "-", last_id)) for s, (_, last_id) in before.items())


def entries(system: System, streams: list[str]) -> int:
    return sum(system.redis.xlen(s) for s in streams)


def place_in_background(system: System, count: int, seed: int) -> tuple[threading.Thread, dict]:
    result: dict = {}
    bodies = make_orders(random.Random(seed), count=count, stock=STOCK)
    thread = threading.Thread(target=lambda: result.setdefault("placed", system.place_orders(bodies, threads=4)))
    thread.start()
    return thread, result


def test_f10_a_cluster_master_killed_and_restarted_with_and_without_its_data_loses_nothing(redis_cluster, make_system):
    system = make_system(redis_url=redis_cluster.url, env={**CLUSTER_ENV, "CACHE_URL": settings.REDIS_URL})
    victim = redis_cluster.node_of(system.streams[0])
    held = [s for s in system.streams if redis_cluster.node_of(s) is victim]
    others = [s for s in system.streams if s not in held]
    assert held and others
    system.add_stock(STOCK)

    # 1. kill -9 under load; down for three seconds (past the 2 s node timeout: the others mark it failed).
    thread, first = place_in_background(system, 150, seed=10)
    time.sleep(1.5)
    at_kill = snapshot(system, held)
    victim.kill(signal.SIGKILL)
    killed = time.monotonic()
    others_at_kill = entries(system, others)
    time.sleep(3)
    others_flowed = entries(system, others) - others_at_kill  # the live masters' partitions kept taking events
    victim.start()  # from its own directory: the AOF replays, nodes.conf keeps its slots
    redis_cluster.wait_ok()
    back = time.monotonic()
    down_1 = back - killed
    lost_at_kill = sum(n for n, _ in at_kill.values()) - survived(system, at_kill)
    thread.join(timeout=300)
    system.wait_settled(timeout=180)
    settled_1 = time.monotonic() - back
    figures_1 = check_invariants(system, first["placed"])
    republished_1 = republished(system)

    # 2. Killed again and back without its data, as from a lost disk: every entry of its partitions is gone.
    thread, second = place_in_background(system, 60, seed=11)
    time.sleep(1)
    wiped = {json.loads(fields["data"])["id"] for s in held for _, fields in system.redis.xrange(s)}
    victim.kill(signal.SIGKILL)
    victim.wipe()
    victim.start()
    redis_cluster.wait_ok()
    back = time.monotonic()
    thread.join(timeout=300)
    system.wait_settled(timeout=180)
    settled_2 = time.monotonic() - back
    figures_2 = check_invariants(system, first["placed"] + second["placed"])
    republished_2 = republished(system) - republished_1

    assert figures_1.lost == figures_2.lost == 0
    assert others_flowed > 0
    assert republished_2 >= len(wiped)  # every event its partitions held came back from the outbox
    report(
        "F10 cluster master kill -9",
        partitions=f"{len(held)}/{PARTITIONS} on the victim",
        down_s=round(down_1, 1),
        entries_at_kill=sum(n for n, _ in at_kill.values()),
        lost_at_kill=lost_at_kill,
        other_partitions_took_while_down=others_flowed,
        republished=republished_1,
        delivered_twice=figures_1.duplicates_skipped,
        settled_s=round(settled_1, 1),
        lost=figures_1.lost,
    )
    report(
        "F10 cluster master back without data",
        events_wiped=len(wiped),
        republished=republished_2,
        delivered_twice=figures_2.duplicates_skipped,
        settled_s=round(settled_2, 1),
        orders=figures_2.orders,
        lost=figures_2.lost,
    )
