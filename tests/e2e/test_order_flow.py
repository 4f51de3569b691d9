"""100 orders through HTTP against limited stock, with the relay and every
consumer (two inventory consumers in one group) running as separate processes."""

import json
import random
import statistics
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from pymongo import MongoClient

from tests.conftest import REPORTS
from tests.e2e.invariants import check_invariants
from tests.e2e.system import ROOT, System

STOCK = {"HOT-1": 30, "HOT-2": 20, "COOL-1": 60}
ORDERS = 100
CANCELS = 10


def make_orders(rng: random.Random, count: int = ORDERS, stock: dict[str, int] = STOCK) -> list[dict]:
    orders = []
    for i in range(count):
        skus = rng.sample(sorted(stock), k=rng.choice([1, 1, 2]))
        orders.append(
            {
                "customer_id": f"customer-{i % 7}",
                "lines": [{"sku": sku, "quantity": rng.randint(1, 3)} for sku in skus],
            }
        )
    return orders


def test_orders_flow_through_every_consumer_and_the_state_stays_consistent(system: System):
    system.add_stock(STOCK)
    bodies = make_orders(random.Random(2026))

    # Place the orders from 8 threads at once, so reservations of one sku race.
    # Every tenth request names its own correlation id.
    def place(i: int) -> dict:
        headers = {"X-Correlation-ID": f"e2e-request-{i}"} if i % 10 == 0 else {}
        sent = time.time()
        status, body, response_headers = system.request("POST", "/api/orders/", bodies[i], headers=headers)
        assert status == 202, body
        assert body["status"] == "PENDING"
        assert response_headers["X-Correlation-ID"] == body["correlation_id"]
        if headers:
            assert body["correlation_id"] == headers["X-Correlation-ID"]
        return {**body, "sent": sent, "lines": bodies[i]["lines"], "customer_id": bodies[i]["customer_id"]}

    with ThreadPoolExecutor(max_workers=8) as pool:
        placed = list(pool.map(place, range(ORDERS)))

    system.wait_settled(timeout=120)
    system.wait_all_final(placed, timeout=60)
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

    # Cancel some confirmed orders: their stock must come back. A second cancel conflicts.
    cancelled = [o for o in placed if views[o["id"]]["status"] == "CONFIRMED"][:CANCELS]
    cancel_correlation = {}
    for order in cancelled:
        status, body, _ = system.request("POST", f"/api/orders/{order['id']}/cancel/")
        assert status == 202, body
        cancel_correlation[order["id"]] = body["correlation_id"]
    system.wait_settled(timeout=60)
    status, body, _ = system.request("POST", f"/api/orders/{cancelled[0]['id']}/cancel/")
    assert status == 409

    # Every order final, no sku over-reserved, views equal to the database,
    # every event logged exactly once, nothing pending.
    check_invariants(system, placed)
    assert all(system.request("GET", f"/api/orders/{o['id']}/")[1]["status"] == "CANCELLED" for o in cancelled)
    stock_api = {row["sku"]: row for row in system.get_all("/api/inventory/items/")}
    assert all(row["on_hand"] == STOCK[sku] for sku, row in stock_api.items())

    # Each order's events carry the correlation id of the request that caused them.
    log = list(MongoClient(system.mongodb_uri, tz_aware=True)[system.mongo_db]["event_log"].find())
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

    # The API's log of one request's transaction: the order, the stock's answer, the order's answer.
    status, body, _ = system.request("GET", f"/api/events/?correlation_id={placed[0]['correlation_id']}")
    types = [e["type"] for e in body["results"]]
    assert types in (
        ["ORDER_CREATED", "STOCK_RESERVED", "ORDER_CONFIRMED"],
        ["ORDER_CREATED", "STOCK_REJECTED", "ORDER_REJECTED"],
    ), types
    assert {e["correlation_id"] for e in body["results"]} == {"e2e-request-0"}

    # Every process stops cleanly on SIGTERM: the consumers, the relay, and gunicorn after its requests.
    codes = system.stop()
    assert all(code == 0 for code in codes.values()), codes

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
    out = ROOT / "build" / "e2e-report.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    REPORTS.append(f"e2e orders: {json.dumps(report)} (also in {out.relative_to(ROOT)})")
