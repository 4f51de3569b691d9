"""100 orders through HTTP against limited stock, with the relay and every
consumer (two inventory consumers in one group) running as separate processes."""

import json
import random
import statistics
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

from pymongo import MongoClient

from tests.e2e.conftest import REPORTS
from tests.e2e.system import ROOT, System

STOCK = {"HOT-1": 30, "HOT-2": 20, "COOL-1": 60}
ORDERS = 100
CANCELS = 10
FINAL = {"CONFIRMED", "REJECTED", "CANCELLED"}


def make_orders(rng: random.Random) -> list[dict]:
    orders = []
    for i in range(ORDERS):
        skus = rng.sample(sorted(STOCK), k=rng.choice([1, 1, 2]))
        orders.append(
            {
                "customer_id": f"customer-{i % 7}",
                "lines": [{"sku": sku, "quantity": rng.randint(1, 3)} for sku in skus],
            }
        )
    return orders


def test_orders_flow_through_every_consumer_and_the_state_stays_consistent(system: System):
    for sku, quantity in STOCK.items():
        status, body, _ = system.request(
            "POST", "/api/inventory/items/", {"sku": sku, "name": sku, "quantity": quantity}
        )
        assert status == 201, body
    system.wait_settled()  # the orders consumer has learned the skus

    # Place the orders from 8 threads at once, so reservations of one sku race.
    rng = random.Random(2026)
    bodies = make_orders(rng)

    def place(i: int) -> dict:
        headers = {"X-Correlation-ID": f"e2e-request-{i}"} if i % 10 == 0 else {}
        sent = time.time()
        status, body, response_headers = system.request("POST", "/api/orders/", bodies[i], headers=headers)
        assert status == 202, body
        assert body["status"] == "PENDING"
        assert response_headers["X-Correlation-ID"] == body["correlation_id"]
        if headers:
            assert body["correlation_id"] == headers["X-Correlation-ID"]
        return {**body, "sent": sent, "lines": bodies[i]["lines"]}

    with ThreadPoolExecutor(max_workers=8) as pool:
        placed = list(pool.map(place, range(ORDERS)))

    def all_final() -> bool:
        return all(system.request("GET", f"/api/orders/{o['id']}/")[1].get("status") in FINAL for o in placed)

    system.wait_settled(timeout=120)
    system.wait_for(all_final, timeout=60, what="every order to reach a final status")
    views = {o["id"]: system.request("GET", f"/api/orders/{o['id']}/")[1] for o in placed}

    # POST -> CONFIRMED latency, from the client's send time to the ORDER_CONFIRMED event's time.
    latencies = sorted(
        datetime.fromisoformat(next(h["at"] for h in views[o["id"]]["history"] if h["status"] == "CONFIRMED"))
        .timestamp() - o["sent"]
        for o in placed
        if views[o["id"]]["status"] == "CONFIRMED"
    )  # fmt: skip
    statuses = Counter(v["status"] for v in views.values())
    assert statuses["CONFIRMED"] > 0 and statuses["REJECTED"] > 0, statuses  # the stock was really contended

    # Cancel some confirmed orders: their stock must come back.
    cancelled = [o for o in placed if views[o["id"]]["status"] == "CONFIRMED"][:CANCELS]
    cancel_correlation = {}
    for order in cancelled:
        status, body, _ = system.request("POST", f"/api/orders/{order['id']}/cancel/")
        assert status == 202, body
        cancel_correlation[order["id"]] = body["correlation_id"]
    system.wait_settled(timeout=60)
    status, body, _ = system.request("POST", f"/api/orders/{cancelled[0]['id']}/cancel/")
    assert status == 409

    # -- invariants ---------------------------------------------------------
    relational = system.dumpdata("orders.order", "orders.orderline", "inventory.stockitem", "eventing.outboxevent")
    by_model = defaultdict(list)
    for row in relational:
        by_model[row["model"]].append(row)
    orders_db = {row["pk"]: row["fields"] for row in by_model["orders.order"]}

    # Every order reached a final status, and the order view agrees with the database.
    views = {o["id"]: system.request("GET", f"/api/orders/{o['id']}/")[1] for o in placed}
    assert {oid: v["status"] for oid, v in views.items()} == {oid: orders_db[oid]["status"] for oid in views}
    assert all(v["status"] in FINAL for v in views.values())
    assert all(views[o["id"]]["status"] == "CANCELLED" for o in cancelled)

    # No sku is over-reserved: reserved is exactly what the live confirmed orders hold.
    items = {row["fields"]["sku"]: row["fields"] for row in by_model["inventory.stockitem"]}
    held = Counter()
    for line in by_model["orders.orderline"]:
        if orders_db[line["fields"]["order"]]["status"] == "CONFIRMED":
            held[line["fields"]["sku"]] += line["fields"]["quantity"]
    for sku, item in items.items():
        assert 0 <= item["reserved"] <= item["on_hand"] == STOCK[sku]
        assert item["reserved"] == held[sku], sku

    # The stock view equals the relational state.
    stock_view = {row["sku"]: row for row in system.get_all("/api/inventory/items/")}
    assert {sku: (v["on_hand"], v["reserved"], v["available"]) for sku, v in stock_view.items()} == {
        sku: (i["on_hand"], i["reserved"], i["on_hand"] - i["reserved"]) for sku, i in items.items()
    }

    # The event log holds every published event exactly once.
    outbox = by_model["eventing.outboxevent"]
    assert all(row["fields"]["published_at"] for row in outbox)
    log = list(MongoClient(system.mongodb_uri, tz_aware=True)[system.mongo_db]["event_log"].find())
    assert len(log) == len(outbox)
    assert {doc["_id"] for doc in log} == {row["fields"]["event_id"] for row in outbox}
    assert system.redis.xlen(system.stream) >= len(outbox)

    # Each order's events carry the correlation id of the request that caused them.
    events_by_order = defaultdict(list)
    for doc in log:
        if doc["aggregate_type"] in ("order", "reservation"):
            events_by_order[doc["aggregate_id"]].append(doc)
    for order in placed:
        for doc in events_by_order[order["id"]]:
            expected = (
                cancel_correlation.get(order["id"]) if doc["type"] in ("ORDER_CANCELLED", "STOCK_RELEASED") else None
            )
            assert doc["correlation_id"] == (expected or order["correlation_id"]), doc
        types = Counter(doc["type"] for doc in events_by_order[order["id"]])
        assert types["ORDER_CREATED"] == 1
        assert types["STOCK_RESERVED"] + types["STOCK_REJECTED"] == 1
    status, body, _ = system.request("GET", f"/api/events/?correlation_id={placed[0]['correlation_id']}")
    # The API's log of one request's transaction: the order, the stock's answer, the order's answer.
    types = [e["type"] for e in body["results"]]
    assert types in (
        ["ORDER_CREATED", "STOCK_RESERVED", "ORDER_CONFIRMED"],
        ["ORDER_CREATED", "STOCK_REJECTED", "ORDER_REJECTED"],
    ), types
    assert {e["correlation_id"] for e in body["results"]} == {"e2e-request-0"}

    # Nothing is left pending, and every consumer stops cleanly on SIGTERM.
    assert all(g["pending"] == 0 for g in system.groups())
    codes = system.stop()
    assert all(code == 0 for name, code in codes.items() if name != "web"), codes

    # Where the time goes: request -> ORDER_CREATED -> STOCK_RESERVED -> ORDER_CONFIRMED.
    stages = defaultdict(list)
    for order in placed:
        at = {doc["type"]: doc["occurred_at"].timestamp() for doc in events_by_order[order["id"]]}
        if "ORDER_CONFIRMED" in at:
            stages["post_to_created"].append(at["ORDER_CREATED"] - order["sent"])
            stages["created_to_reserved"].append(at["STOCK_RESERVED"] - at["ORDER_CREATED"])
            stages["reserved_to_confirmed"].append(at["ORDER_CONFIRMED"] - at["STOCK_RESERVED"])

    report = {
        "orders": ORDERS,
        "statuses": dict(statuses),
        "confirm_latency_ms": {
            "p50": round(statistics.median(latencies) * 1000, 1),
            "p99": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, 1),
            "max": round(latencies[-1] * 1000, 1),
            "samples": len(latencies),
        },
        "stage_p50_ms": {name: round(statistics.median(values) * 1000, 1) for name, values in stages.items()},
    }
    out = Path(ROOT) / "build" / "e2e-report.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    REPORTS.append(f"e2e orders: {json.dumps(report)} (also in {out.relative_to(ROOT)})")
