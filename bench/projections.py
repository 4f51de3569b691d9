"""P3: the projections consumer's cost per event when the views are small and when they are large, next
to a raw pymongo ``bulk_write`` of the same documents measured in the same run (compare ratios: these
machines are noisy).

    .venv/bin/python bench/projections.py [--sizes 1000 50000] [--orders 1000]

For each size it fills a scratch database with that many orders' worth of views and log (folded in
memory with the projections' own rule, then bulk-inserted), then puts ``--orders`` new orders' events
(ORDER_CREATED, STOCK_RESERVED, ORDER_CONFIRMED, over the same customers) on a stream and times the
real ``projections`` consumer (StreamConsumer, batches of 100) until it has acked them all. The raw
baseline is the same writes without the projection around them: every bulk write that run made (each
batch's changed rows of each view, and each batch's log records), sent again with pymongo into the same
collections, in the same order. So the ratio raw/projections is the share of the time spent writing
(target >= 0.5x): the rest is reading the rows, locking them and folding. Also reports ms per event and
the growth between the sizes (target <= 1.3x).
"""

import argparse
import os
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DJANGO_DEBUG", "true")  # a local development run
os.environ.setdefault("LOG_LEVEL", "WARNING")

import django  # noqa: E402

django.setup()

import redis  # noqa: E402
from django.conf import settings  # noqa: E402
from mongoengine.connection import get_db  # noqa: E402
from pymongo import MongoClient, ReplaceOne  # noqa: E402
from pymongo.collection import Collection  # noqa: E402

from eventing.consumer.runner import StreamConsumer  # noqa: E402
from eventing.contract import context  # noqa: E402
from eventing.contract.envelope import Envelope  # noqa: E402
from eventing.readside import mongo  # noqa: E402
from eventing.readside.event_log import log_record  # noqa: E402
from eventing.readside.projections import Fold, base_name, projections  # noqa: E402
from inventory.events import StockAdded, StockReserved  # noqa: E402
from orders.events import OrderConfirmed, OrderCreated  # noqa: E402

CUSTOMERS = 200
BATCH = 100
SPACING = timedelta(minutes=10)  # between two prefilled orders' placed_at: 50k orders span a year


def order_envelopes(n: int, at: datetime) -> list[Envelope]:
    """An order's three events, as the system raises them: one transaction, each caused by the one before."""
    order_id, customer, seq = str(uuid.uuid4()), f"customer-{n % CUSTOMERS}", n // CUSTOMERS + 1
    lines = [{"sku": f"SKU-{n % 50}", "quantity": 1}]
    with context.bind(correlation_id=str(uuid.uuid4())):
        created = Envelope.wrap(
            OrderCreated(
                order_id=order_id,
                customer_id=customer,
                customer_seq=seq,
                lines=lines,
                placed_at=at.isoformat(),
                channel="api",
            ),
            aggregate_version=1,
        )
    with context.bind(correlation_id=created.correlation_id, causation_id=created.id):
        reserved = Envelope.wrap(
            StockReserved(
                order_id=order_id,
                lines=lines,
                items=[{"sku": f"SKU-{n % 50}", "on_hand": 10**6, "reserved": n, "version": n + 2}],
            ),
            aggregate_version=1,
        )
    with context.bind(correlation_id=created.correlation_id, causation_id=reserved.id):
        confirmed = Envelope.wrap(OrderConfirmed(order_id=order_id, customer_id=customer), aggregate_version=2)
    return [created, reserved, confirmed]


def prefill(orders: int, start: datetime) -> None:
    """``orders`` orders' views, indexes and log, folded in memory and bulk-inserted (as a replay does)."""
    fold = Fold(projections().values())
    records = []
    for sku in range(50):
        envelope = Envelope.wrap(
            StockAdded(sku=f"SKU-{sku}", name="item", quantity=10**6, on_hand=10**6, reserved=0), aggregate_version=1
        )
        fold.apply(envelope)
        records.append(log_record(envelope))
    for n in range(orders):
        for envelope in order_envelopes(n, start + n * SPACING):
            fold.apply(envelope)
            records.append(log_record(envelope))
    db = get_db()
    for document, rows in fold.rows.items():
        docs = list(rows.values())
        for first in range(0, len(docs), 5000):
            db[base_name(document)].insert_many(docs[first : first + 5000], ordered=False)
    for first in range(0, len(records), 5000):
        db["event_log"].insert_many(records[first : first + 5000], ordered=False)


class record_writes:  # noqa: N801 - used as a function that returns a recorder
    """Records every bulk write the projections make: (collection, documents) in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[dict]]] = []
        self._insert_many, self._bulk_write = Collection.insert_many, Collection.bulk_write
        recorder = self

        def insert_many(collection: Collection, documents: list[dict], *args: object, **kwargs: object) -> object:
            recorder.calls.append((collection.name, [dict(d) for d in documents]))
            return recorder._insert_many(collection, documents, *args, **kwargs)

        def bulk_write(collection: Collection, requests: list, *args: object, **kwargs: object) -> object:
            recorder.calls.append((collection.name, [dict(r._doc) for r in requests]))
            return recorder._bulk_write(collection, requests, *args, **kwargs)

        Collection.insert_many, Collection.bulk_write = insert_many, bulk_write

    def stop(self) -> None:
        Collection.insert_many, Collection.bulk_write = self._insert_many, self._bulk_write


def run_size(size: int, new_orders: int, client: redis.Redis) -> dict[str, float]:
    database = f"bench_p3_{uuid.uuid4().hex[:8]}"
    base = settings.MONGODB_URI.partition("?")[0].rsplit("/", 1)[0]
    mongo.connect(f"{base}/{database}")
    stream = f"bench-p3-{uuid.uuid4().hex[:8]}"
    settings.EVENTING_STREAM = stream
    try:
        start = datetime(2026, 11, 1, tzinfo=UTC)
        began = time.perf_counter()
        prefill(size, start)
        filled_s = time.perf_counter() - began
        envelopes = [
            e for n in range(size, size + new_orders) for e in order_envelopes(n, start + timedelta(seconds=n))
        ]
        pipe = client.pipeline(transaction=False)
        for envelope in envelopes:
            pipe.xadd(stream, {"type": envelope.type, "data": envelope.to_json(), "timestamp": "-"})
        pipe.execute()

        writes = record_writes()
        consumer = StreamConsumer(name="projections", count=BATCH, block_ms=5)
        began = time.perf_counter()
        consumer.run_until_idle()
        projected_s = time.perf_counter() - began
        writes.stop()
        assert consumer.processed == len(envelopes), consumer.processed

        # The raw baseline: the very same bulk writes again, bare.
        db = get_db()
        began = time.perf_counter()
        for name, rows in writes.calls:
            if name == "event_log":
                db["raw_event_log"].insert_many(rows, ordered=False)
            else:
                db[name].bulk_write([ReplaceOne({"_id": r["_id"]}, r, upsert=True) for r in rows], ordered=False)
        raw_s = time.perf_counter() - began
        rows_written = sum(len(rows) for _name, rows in writes.calls)
        return {
            "size": size,
            "filled_s": filled_s,
            "events": len(envelopes),
            "rows_written": rows_written,
            "projected_ms_per_event": projected_s * 1000 / len(envelopes),
            "raw_ms_per_event": raw_s * 1000 / len(envelopes),
            "ratio": raw_s / projected_s,
        }
    finally:
        client.delete(stream, f"{stream}:retry:projections")
        MongoClient(settings.MONGODB_URI).drop_database(database)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs=2, default=[1000, 50000], help="Orders in the views before.")
    parser.add_argument("--orders", type=int, default=1000, help="New orders projected and timed (x3 events).")
    args = parser.parse_args()
    client = redis.Redis.from_url(settings.REDIS_URL, decode_responses=True)
    results = []
    for size in args.sizes:
        result = run_size(size, args.orders, client)
        results.append(result)
        print(
            f"views of {size} orders (filled in {result['filled_s']:.1f}s): {result['events']} events, "
            f"{result['rows_written']} rows written; projections {result['projected_ms_per_event']:.2f} ms/event, "
            f"raw bulk_write {result['raw_ms_per_event']:.2f} ms/event: {result['ratio']:.2f}x raw"
        )
    small, large = results
    growth = large["projected_ms_per_event"] / small["projected_ms_per_event"]
    print(
        f"P3 projections: {small['projected_ms_per_event']:.2f} ms/event at {small['size']} orders, "
        f"{large['projected_ms_per_event']:.2f} at {large['size']} (growth {growth:.2f}x); "
        f"vs raw bulk_write {small['ratio']:.2f}x / {large['ratio']:.2f}x"
    )


if __name__ == "__main__":
    main()
