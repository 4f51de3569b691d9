"""Replay throughput on a large event log, next to a raw baseline in the same run.

    .venv/bin/python bench/replay_throughput.py [--events 100000]

It writes an event log of --events valid events (orders that are created,
reserved and confirmed, and the stock they draw on) into a MongoDB database
of its own, starts the web server on it, builds the views once, then runs
the blue/green rebuild of every view again while a client keeps reading the API. It
reports replay events/s, the switch-over time, the API's answers during the
rebuild, and — as the baseline — a raw pymongo bulk_write of the same view
documents the rebuild wrote. Uses the Redis and FerretDB that
`scripts/services start` runs (or REDIS_URL / MONGODB_URI).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TAG = uuid.uuid4().hex[:8]
BASE_URI = os.environ.get("MONGODB_URI", "mongodb://127.0.0.1:27018/eventmono")
MONGO_DB = f"bench_replay_{TAG}"
os.environ["MONGODB_URI"] = BASE_URI.rsplit("/", 1)[0] + f"/{MONGO_DB}"
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DJANGO_DEBUG", "true")  # a local development run
os.environ["LOG_LEVEL"] = "WARNING"

import django  # noqa: E402

django.setup()

from mongoengine.connection import get_db  # noqa: E402
from pymongo import InsertOne  # noqa: E402

from eventing.contract.envelope import Envelope  # noqa: E402
from eventing.readside.replay import replay_views  # noqa: E402
from inventory.events import StockAdded, StockReserved  # noqa: E402
from orders.events import OrderConfirmed, OrderCreated  # noqa: E402
from tests.e2e.system import server_ports  # noqa: E402

SKUS = [f"SKU-{i}" for i in range(50)]


def make_log(total: int) -> list[dict]:
    """Log documents for ``total`` events: stock, then orders created, reserved, confirmed."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    docs: list[dict] = []
    position = [0]
    version = dict.fromkeys(SKUS, 1)
    reserved = dict.fromkeys(SKUS, 0)

    def log(event, aggregate_version: int, correlation_id: str) -> None:
        position[0] += 1
        envelope = Envelope.wrap(event, aggregate_version=aggregate_version)
        moment = start + timedelta(milliseconds=position[0])
        docs.append(
            {
                "_id": envelope.id,
                "type": envelope.type,
                "version": envelope.version,
                "occurred_at": moment,
                "correlation_id": correlation_id,
                "causation_id": None,
                "aggregate_type": envelope.aggregate_type,
                "aggregate_id": envelope.aggregate_id,
                "aggregate_version": aggregate_version,
                "data": envelope.data,
                "stream": "bench",
                "stream_entry_id": f"{int(moment.timestamp() * 1000)}-0",
                "stream_ms": int(moment.timestamp() * 1000),
                "stream_seq": 0,
                "recorded_at": moment,
            }
        )

    for sku in SKUS:
        log(StockAdded(sku=sku, name=sku, quantity=10**7, on_hand=10**7, reserved=0), 1, str(uuid.uuid4()))
    order = 0
    while len(docs) + 3 <= total:
        order += 1
        order_id, sku, corr = str(uuid.uuid4()), SKUS[order % len(SKUS)], str(uuid.uuid4())
        lines = [{"sku": sku, "quantity": 1}]
        created = OrderCreated(
            order_id=order_id,
            customer_id=f"c-{order % 500}",
            customer_seq=order // 500 + 1,
            lines=lines,
            placed_at=start.isoformat(),
            channel="bench",
        )
        log(created, 1, corr)
        version[sku] += 1
        reserved[sku] += 1
        item = {"sku": sku, "on_hand": 10**7, "reserved": reserved[sku], "version": version[sku]}
        log(StockReserved(order_id=order_id, lines=lines, items=[item]), 1, corr)
        log(OrderConfirmed(order_id=order_id, customer_id=f"c-{order % 500}"), 2, corr)
    return docs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    db = get_db()
    tmp = Path(tempfile.mkdtemp())
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp / 'db.sqlite3'}", "DJANGO_SUPERUSER_PASSWORD": "bench-pw"}
    env |= {"DJANGO_SUPERUSER_USERNAME": "bench", "DJANGO_SUPERUSER_EMAIL": "bench@example.com"}
    manage = [sys.executable, str(ROOT / "manage.py")]
    web = None
    try:
        started = time.perf_counter()
        docs = make_log(args.events)
        for i in range(0, len(docs), 5000):
            db["event_log"].insert_many(docs[i : i + 5000], ordered=False)
        made_in = time.perf_counter() - started

        subprocess.run([*manage, "migrate", "-v0"], env=env, check=True, cwd=ROOT)
        subprocess.run([*manage, "createsuperuser", "--noinput"], env=env, check=True, cwd=ROOT, capture_output=True)
        port = server_ports()
        web = subprocess.Popen(
            [*manage, "runserver", "--noreload", f"127.0.0.1:{port}"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{base}/api/orders/", timeout=1)  # noqa: S310 - loopback
            except urllib.error.HTTPError:
                break
            except OSError:
                time.sleep(0.1)
        token_req = urllib.request.Request(  # noqa: S310 - loopback
            f"{base}/api/auth/token/",
            data=json.dumps({"username": "bench", "password": "bench-pw"}).encode(),
            headers={"Content-Type": "application/json"},
        )
        token = json.load(urllib.request.urlopen(token_req))["token"]  # noqa: S310 - loopback

        answers: list[tuple[int, float]] = []
        stop = threading.Event()

        def reader() -> None:
            while not stop.is_set():
                req = urllib.request.Request(  # noqa: S310 - loopback
                    f"{base}/api/inventory/items/SKU-1/", headers={"Authorization": f"Token {token}"}
                )
                t0 = time.perf_counter()
                try:
                    with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - loopback
                        answers.append((resp.status, time.perf_counter() - t0))
                except urllib.error.HTTPError as err:
                    answers.append((err.code, time.perf_counter() - t0))
                time.sleep(0.05)

        first = replay_views(batch_size=5000)  # the live views, as a deployment would have them
        thread = threading.Thread(target=reader)
        thread.start()
        result = replay_views(batch_size=5000)  # the measured rebuild, while the API serves the live views
        stop.set()
        thread.join()

        # The baseline: the same view documents, written with a raw pymongo bulk_write.
        rows = {name: list(db[name].find()) for name in result.collections.values()}
        t0 = time.perf_counter()
        for name, docs in rows.items():
            scratch = db[f"{name}__baseline"]
            for i in range(0, len(docs), 5000):
                scratch.bulk_write([InsertOne(row) for row in docs[i : i + 5000]], ordered=False)
        raw = time.perf_counter() - t0
        row_count = sum(len(docs) for docs in rows.values())

        ok = [latency for status, latency in answers if status == 200]
        report = {
            "events": result.events,
            "first_build_s": round(first.seconds, 2),
            "log_written_in_s": round(made_in, 1),
            "replay_s": round(result.seconds, 2),
            "replay_events_per_s": round(result.events_per_second),
            "view_rows_written": sum(result.rows.values()),
            "raw_bulk_write_same_rows_s": round(raw, 2),
            "raw_bulk_write_rows_per_s": round(row_count / raw),
            "replay_time_over_raw_write_time": round(result.seconds / raw, 1),
            "switch_ms": round(result.switch_ms or 0, 1),
            "caught_up_events": result.caught_up,
            "api_answers_during_replay": len(answers),
            "api_non_200": len(answers) - len(ok),
            "api_p50_ms": round(statistics.median(ok) * 1000, 1) if ok else None,
            "api_p99_ms": round(sorted(ok)[int(len(ok) * 0.99)] * 1000, 1) if ok else None,
        }
        print(json.dumps(report, indent=2))  # noqa: T201
    finally:
        if web:
            web.terminate()
            web.wait(timeout=10)
        get_db().client.drop_database(MONGO_DB)


if __name__ == "__main__":
    main()
