"""F1, F2, F9: consumers killed, stopped and doubled while orders flow."""

import random
import signal
import threading
import time

from tests.e2e.invariants import check_invariants
from tests.e2e.system import wait_for
from tests.e2e.test_order_flow import make_orders
from tests.faults.conftest import consumer_pending, report


def pending_entries(system, group: str, consumer: str | None = None) -> list[dict]:
    return system.redis.xpending_range(system.stream, group, min="-", max="+", count=10_000, consumername=consumer)


STOCK = {"HOT-1": 400, "HOT-2": 300, "COOL-1": 900}


def place_in_background(system, bodies):
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("placed", system.place_orders(bodies)))
    thread.start()
    return thread, result


def test_f1_a_consumer_killed_mid_batch_and_restarted_loses_and_doubles_nothing(make_system):
    system = make_system()
    system.add_stock(STOCK)
    bodies = make_orders(random.Random(1), count=1000, stock=STOCK)
    thread, result = place_in_background(system, bodies)

    # kill -9 an inventory consumer while it holds a delivered, unacked batch
    # (if it acked between the look and the kill, start it again and retry).
    for _ in range(10):
        wait_for(
            lambda: consumer_pending(system, "inventory-0") > 0,
            timeout=60,
            what="inventory-0 mid-batch",
            interval=0.002,
        )
        assert system.kill("inventory-0", signal.SIGKILL) == -signal.SIGKILL
        held = {p["message_id"] for p in pending_entries(system, "inventory", consumer="inventory-0")}
        if held:
            break
        system.restart("inventory-0")
    assert held
    time.sleep(1)
    restarted = time.monotonic()
    system.restart("inventory-0")  # same consumer id: it re-reads what it held
    wait_for(
        lambda: not held & {p["message_id"] for p in pending_entries(system, "inventory")},
        timeout=60,
        what="the held batch to be re-processed and acked",
    )
    recovered = time.monotonic() - restarted
    thread.join(timeout=300)
    placed = result["placed"]
    system.wait_settled(timeout=240)

    figures = check_invariants(system, placed)
    assert figures.lost == 0
    report(
        "F1 kill -9 inventory consumer",
        orders=figures.orders,
        held_when_killed=len(held),
        events_produced=figures.produced,
        events_logged=figures.logged,
        applied=figures.applied,
        delivered_twice=figures.duplicates_skipped,
        lost=figures.lost,
        held_batch_reprocessed_after_restart_s=round(recovered, 2),
    )


def test_f2_sigterm_finishes_the_batch_and_leaves_nothing_pending_under_its_name(make_system):
    system = make_system()
    system.add_stock(STOCK)
    thread, result = place_in_background(system, make_orders(random.Random(2), count=200, stock=STOCK))

    wait_for(
        lambda: consumer_pending(system, "inventory-0") > 0, timeout=60, what="inventory-0 mid-batch", interval=0.005
    )
    assert system.kill("inventory-0", signal.SIGTERM) == 0
    assert consumer_pending(system, "inventory-0") == 0

    thread.join(timeout=300)
    system.wait_settled(timeout=120)  # inventory-1 carries on alone
    check_invariants(system, result["placed"])


def test_f9_two_consumers_per_group_with_interleaved_events_converge(make_system):
    system = make_system(consumers={"inventory": 2, "orders": 2, "projections": 2})
    system.add_stock(STOCK)
    placed = system.place_orders(make_orders(random.Random(9), count=150, stock=STOCK))
    # Cancel while the orders are still moving, so one order's events are spread over both consumers.
    for order in placed[::3]:
        status, body, _ = system.request("POST", f"/api/orders/{order['id']}/cancel/")
        assert status in (202, 409), body
    system.wait_settled(timeout=180)

    figures = check_invariants(system, placed)
    delivered = {name: system.log(name).count("already applied") for name in system.procs}
    assert figures.statuses.get("CANCELLED", 0) > 0
    assert figures.lost == 0
    report("F9 two consumers per group", statuses=figures.statuses, duplicates=sum(delivered.values()))
