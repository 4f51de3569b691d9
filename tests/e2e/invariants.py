"""What must hold after any run of the system, whatever was broken during it."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from pymongo import MongoClient

from tests.e2e.system import FINAL, System


@dataclass
class Report:
    orders: int
    statuses: dict[str, int]
    produced: int  # events committed to the outbox
    logged: int  # events in the Mongo event log
    applied: dict[str, int]  # relational events applied once, per consumer (inbox rows)
    duplicates_skipped: dict[str, int] = field(default_factory=dict)  # deliveries recognised as repeats
    dead_letters: int = 0
    lost: int = 0  # produced but never logged (must be 0)


def check_invariants(system: System, placed: list[dict[str, Any]], *, dead_letters: int = 0) -> Report:
    rows = system.dumpdata(
        "orders.order",
        "orders.orderline",
        "inventory.stockitem",
        "eventing.outboxevent",
        "eventing.processedevent",
        "eventing.deadletter",
    )
    by_model: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_model[row["model"]].append(row)
    orders = {row["pk"]: row["fields"] for row in by_model["orders.order"]}
    mongo = MongoClient(system.mongodb_uri, tz_aware=True)[system.mongo_db]

    # Every order reached a final status, and the order view agrees with the database.
    assert {o["id"] for o in placed} <= set(orders)
    assert all(orders[o["id"]]["status"] in FINAL for o in placed), Counter(o["status"] for o in orders.values())
    views = {doc["_id"]: doc for doc in mongo["order_view"].find()}
    assert {oid: v["status"] for oid, v in views.items()} == {oid: o["status"] for oid, o in orders.items()}
    assert {oid: v["version"] for oid, v in views.items()} == {oid: o["version"] for oid, o in orders.items()}

    # Each customer's orders are numbered from 1 with no number twice, however concurrently they were placed,
    # and the customer's listing counts them all.
    numbers: defaultdict[str, list[int]] = defaultdict(list)
    for order in orders.values():
        numbers[order["customer_id"]].append(order["customer_seq"])
    for customer, seqs in numbers.items():
        assert sorted(seqs) == list(range(1, len(seqs) + 1)), (customer, sorted(seqs))
    assert {oid: v["customer_seq"] for oid, v in views.items()} == {oid: o["customer_seq"] for oid, o in orders.items()}
    counts = {doc["_id"]: doc["counts"]["numbered"]["version"] for doc in mongo["customer_order_counts"].find()}
    assert counts == {customer: len(seqs) for customer, seqs in numbers.items()}

    # No sku is over-reserved: reserved is exactly what the live confirmed orders hold.
    items = {row["fields"]["sku"]: row["fields"] for row in by_model["inventory.stockitem"]}
    held: Counter[str] = Counter()
    for line in by_model["orders.orderline"]:
        if orders[line["fields"]["order"]]["status"] == "CONFIRMED":
            held[line["fields"]["sku"]] += line["fields"]["quantity"]
    for sku, item in items.items():
        assert 0 <= item["reserved"] <= item["on_hand"], sku
        assert item["reserved"] == held[sku], (sku, item["reserved"], held[sku])

    # The stock view equals the relational state, and on_hand = available + reserved.
    stock_view = {doc["_id"]: doc for doc in mongo["stock_view"].find()}
    assert {sku: (v["on_hand"], v["reserved"], v["available"]) for sku, v in stock_view.items()} == {
        sku: (i["on_hand"], i["reserved"], i["on_hand"] - i["reserved"]) for sku, i in items.items()
    }
    assert all(v["on_hand"] == v["available"] + v["reserved"] for v in stock_view.values())

    # The event log holds every published event exactly once.
    outbox = by_model["eventing.outboxevent"]
    assert all(row["fields"]["published_at"] for row in outbox)
    log_ids = [doc["_id"] for doc in mongo["event_log"].find({}, {"_id": 1})]
    assert len(log_ids) == len(set(log_ids))
    produced = {row["fields"]["event_id"] for row in outbox}
    lost = produced - set(log_ids)
    assert not lost, f"{len(lost)} event(s) never reached the log"
    assert set(log_ids) == produced

    # Nothing is left pending, and nothing was dead-lettered unless the test expects it.
    assert system.pending() == 0
    assert len(by_model["eventing.deadletter"]) == dead_letters, [
        r["fields"]["reason"] for r in by_model["eventing.deadletter"]
    ]

    applied = Counter(row["fields"]["consumer"] for row in by_model["eventing.processedevent"])
    return Report(
        orders=len(placed),
        statuses=dict(Counter(orders[o["id"]]["status"] for o in placed)),
        produced=len(produced),
        logged=len(log_ids),
        applied=dict(applied),
        duplicates_skipped=duplicates_skipped(system),
        dead_letters=len(by_model["eventing.deadletter"]),
        lost=len(lost),
    )


def duplicates_skipped(system: System) -> dict[str, int]:
    """Repeat deliveries the consumers recognised, from their logs (LOG_LEVEL=INFO)."""
    counts: Counter[str] = Counter()
    for path in system.workdir.glob("*.log"):
        name = re.sub(r"-\d+$", "", path.stem)
        counts[name] += path.read_text(errors="replace").count("skipping the duplicate")
    return {name: n for name, n in counts.items() if n}
