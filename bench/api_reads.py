"""API reads with many orders stored: an order, a customer's list, a transaction's timeline and its
events, through the real web server (gunicorn), next to raw baselines measured in the same run.

    .venv/bin/python bench/api_reads.py [--orders 50000] [--samples 200]

It starts the whole system as tests/e2e does (its own SQLite database, stream and Mongo database on the
services `scripts/services start` runs), fills the views, the log and its indexes with ``--orders``
orders (folded in memory with the projections' own rule and bulk-inserted, as a replay does), places a
few real orders through the API, then times each read. Raw baselines: pymongo's find_one by _id on the
same order view, and the same server answering a GET for an order that does not exist (auth, routing
and one lookup: the floor of any read). The reads and the baselines are taken in turn, sample by sample.
Target: p99 <= 20 ms for each read.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from projections import prefill  # noqa: E402  (sets Django up)
from pymongo import MongoClient  # noqa: E402

from eventing.readside import mongo  # noqa: E402
from tests.e2e.system import System  # noqa: E402

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6380/0")
MONGODB_URI = os.environ.get("MONGODB_URI", "mongodb://127.0.0.1:27018/eventmono")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


FLOOR, RAW = "floor", "raw"


def timed_in_turn(samples: int, calls: dict[str, Callable[[], object]]) -> dict[str, list[float]]:
    """``samples`` durations (ms) of each call, the calls taken in turn: a pause of the machine (another
    process's burst, a database checkpoint) falls on every read alike, not on whichever ran then."""
    for call in calls.values():
        call()  # warm
    durations: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(samples):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            durations[name].append((time.perf_counter() - started) * 1000)
    return durations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=50_000, help="Orders stored before the reads.")
    parser.add_argument("--samples", type=int, default=200, help="Requests per read.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        system = System(Path(workdir), redis_url=REDIS_URL, mongodb_uri=MONGODB_URI, env={"WEB_CONCURRENCY": "2"})
        try:
            system.start()
            mongo.connect(system.mongodb_uri)
            began = time.perf_counter()
            prefill(args.orders, datetime(2025, 11, 1, tzinfo=UTC))  # a year of history
            print(f"stored {args.orders} orders' views, log and indexes in {time.perf_counter() - began:.0f}s")
            system.add_stock({"BENCH-1": 1000})
            placed = system.place_orders(
                [{"customer_id": "customer-7", "lines": [{"sku": "BENCH-1", "quantity": 1}]} for _ in range(5)]
            )
            system.wait_settled()
            order, correlation = placed[0]["id"], placed[0]["correlation_id"]

            def get(path: str) -> None:
                status, body, _ = system.request("GET", path)
                assert status in (200, 404), (path, status, body)

            reads = {
                "GET /api/orders/{id}/": f"/api/orders/{order}/",
                "GET /api/orders/?customer_id= (page 1 of 255 orders)": "/api/orders/?customer_id=customer-7",
                "GET /api/timeline/{cid}/": f"/api/timeline/{correlation}/",
                "GET /api/events/?correlation_id=": f"/api/events/?correlation_id={correlation}",
            }
            views = MongoClient(system.mongodb_uri)[system.mongo_db]["order_view"]
            calls = {name: lambda p=path: get(p) for name, path in reads.items()}
            calls[FLOOR] = lambda: get("/api/orders/00000000-0000-4000-8000-000000000000/")
            calls[RAW] = lambda: views.find_one({"_id": order})
            results = timed_in_turn(args.samples, calls)
            floor, raw = results.pop(FLOOR), results.pop(RAW)
            print(
                f"raw find_one by _id on order_view: p50 {statistics.median(raw):.2f} ms, p99 {pct(raw, 0.99):.2f} ms"
            )
            print(
                f"server floor (GET of a missing order): "
                f"p50 {statistics.median(floor):.2f} ms, p99 {pct(floor, 0.99):.2f} ms"
            )
            for name, durations in results.items():
                p50, p99 = statistics.median(durations), pct(durations, 0.99)
                print(
                    f"{name}: p50 {p50:.2f} ms, p99 {p99:.2f} ms ({p50 / statistics.median(floor):.1f}x the floor) "
                    f"{'meets' if p99 <= 20 else 'MISSES'} p99 <= 20 ms"
                )
        finally:
            system.stop()
            system.cleanup()


if __name__ == "__main__":
    main()
