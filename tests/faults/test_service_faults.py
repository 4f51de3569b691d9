"""F3, F4, F5: Redis and FerretDB killed or stopped under load."""

import random
import signal
import threading
import time

from tests.e2e.invariants import check_invariants
from tests.e2e.test_order_flow import make_orders
from tests.faults.conftest import report

STOCK = {"HOT-1": 200, "HOT-2": 150, "COOL-1": 400}


def unpublished(system) -> int:
    return sum(1 for row in system.dumpdata("eventing.outboxevent") if not row["fields"]["published_at"])


def test_f3_redis_killed_during_load_and_restarted_from_its_aof_loses_nothing(redis_server, make_system):
    system = make_system(redis_url=redis_server.url)
    system.add_stock(STOCK)
    bodies = make_orders(random.Random(3), count=400, stock=STOCK)
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("placed", system.place_orders(bodies)))
    thread.start()

    time.sleep(3)  # well into the load
    entries_before = system.redis.xlen(system.stream)
    redis_server.kill(signal.SIGKILL)
    time.sleep(2)
    redis_server.start()  # from the same directory: the AOF replays
    restarted = time.monotonic()
    entries_after = system.redis.xlen(system.stream)
    thread.join(timeout=300)
    system.wait_settled(timeout=240)
    recovered = time.monotonic() - restarted

    figures = check_invariants(system, result["placed"])
    assert figures.lost == 0
    report(
        "F3 kill -9 Redis",
        orders=figures.orders,
        stream_entries_at_kill=entries_before,
        stream_entries_after_restart=entries_after,
        events_produced=figures.produced,
        events_logged=figures.logged,
        applied=figures.applied,
        delivered_twice=figures.duplicates_skipped,
        lost=figures.lost,
        recovery_s=round(recovered, 1),
    )


def test_f4_orders_placed_while_redis_is_down_are_accepted_and_published_once_it_is_back(redis_server, make_system):
    system = make_system(redis_url=redis_server.url)
    system.add_stock(STOCK)
    redis_server.stop()

    started = time.monotonic()
    placed = system.place_orders(make_orders(random.Random(4), count=50, stock=STOCK), threads=4)
    accepted_in = time.monotonic() - started
    assert len(placed) == 50  # every one answered 202
    assert unpublished(system) == 50

    redis_server.start()
    system.wait_for(lambda: unpublished(system) == 0, timeout=60, what="the relay to publish the backlog")
    system.wait_settled(timeout=120)

    figures = check_invariants(system, placed)
    report("F4 Redis down", orders=50, accepted_in_s=round(accepted_in, 1), lost=figures.lost)


def test_f5_ferretdb_stopped_longer_than_the_claim_idle_time_dead_letters_nothing(ferretdb_server, make_system):
    system = make_system(mongodb_uri=ferretdb_server.uri)
    system.add_stock(STOCK)
    result = {}
    bodies = make_orders(random.Random(5), count=150, stock=STOCK)
    thread = threading.Thread(target=lambda: result.setdefault("placed", system.place_orders(bodies)))
    thread.start()

    time.sleep(1)
    ferretdb_server.stop()
    time.sleep(6)  # twice the claim idle time (3 s) in FAULT_ENV
    ferretdb_server.start()
    restarted = time.monotonic()
    thread.join(timeout=300)
    system.wait_settled(timeout=180)
    recovered = time.monotonic() - restarted

    figures = check_invariants(system, result["placed"], dead_letters=0)
    assert "NOT READY" not in system.manage("consumer_health", check=False).stdout  # all ready again
    report(
        "F5 FerretDB stopped 6s",
        orders=figures.orders,
        dead_letters=figures.dead_letters,
        recovery_s=round(recovered, 1),
    )
