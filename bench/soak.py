"""Soak: orders at a steady rate from many client threads that poll their orders until final, as a
client sees it. Waves of p50/p99 POST -> final status, and the growth between the last wave and the
first, next to a raw baseline measured in the same run.

    .venv/bin/python bench/soak.py [--orders 10000] [--rate 50] [--threads 64] [--poll-ms 100]

Runs the whole system as tests/e2e does (gunicorn, relay, consumers as processes, its own database,
stream and Mongo database on the services `scripts/services start` runs), with one process per
consumer as the Procfile (`make run`) starts them, and as many gunicorn workers as gunicorn.conf.py gives
`make run` (2 per core + 1; the tests' systems run 2). Order i is sent at
start + i/rate by whichever client thread is free. For one order in --poll-every (4: a quarter, as
the issue measured it) the client then GETs it every --poll-ms until its status is final, and that
is the latency reported; every other order is checked once all have settled. The raw baseline is the
same server answering an authenticated GET of an order (what each poll costs). At the end it reports
every wave, how many orders never became final (must be 0), and the outbox and inbox table sizes.
Targets: p99 <= 250 ms in the first and the last 1,000 orders, growth <= 1.3x.
"""

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.system import PROCFILE_CONSUMERS, System, make_run_web_env  # noqa: E402

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6380/0")
MONGODB_URI = os.environ.get("MONGODB_URI", "mongodb://127.0.0.1:27018/eventmono")
FINAL = {"CONFIRMED", "REJECTED", "CANCELLED"}
WAVE = 1000


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


# The hops of one order, each from one point of its events' records to the next: when the web committed
# ORDER_CREATED, when the relay (or the committing process) XADDed it, when the next consumer raised its
# answer, and so on, to when the projections consumer read the final event and the client saw it.
HOPS = ("ORDER_CREATED", "STOCK_RESERVED", "ORDER_CONFIRMED")


Hops = dict[str, float]


def stage_breakdown(
    system: System, walls: dict[int, tuple[str, float, float]]
) -> tuple[dict[str, dict[int, list[float]]], dict[int, Hops]]:
    """Per wave, the milliseconds each polled order spent in each hop, from the event log (one read of it);
    and each order's hops."""
    import pymongo

    by_correlation: dict[str, dict[str, dict]] = {}
    with pymongo.MongoClient(system.mongodb_uri, tz_aware=True) as client:
        fields = {"type": 1, "correlation_id": 1, "occurred_at": 1, "stream_ms": 1, "recorded_at": 1}
        for record in client.get_default_database()["event_log"].find({}, fields):
            by_correlation.setdefault(record["correlation_id"], {})[record["type"]] = record
    stages: dict[str, dict[int, list[float]]] = {}
    per_order: dict[int, Hops] = {}

    def add(stage: str, i: int, ms: float) -> None:
        stages.setdefault(stage, {}).setdefault(i // WAVE, []).append(ms)
        per_order.setdefault(i, {})[stage] = ms

    for i, (correlation_id, sent_wall, final_wall) in walls.items():
        records = by_correlation.get(correlation_id, {})
        if not all(kind in records for kind in HOPS):
            continue  # rejected orders take another path
        at = sent_wall
        for kind in HOPS:
            record = records[kind]
            raised, published = record["occurred_at"].timestamp(), record["stream_ms"] / 1000
            add(f"until {kind} committed", i, (raised - at) * 1000)
            add(f"  {kind} committed -> in the stream", i, (published - raised) * 1000)
            at = published
        read = records[HOPS[-1]]["recorded_at"].timestamp()
        add(f"{HOPS[-1]} in the stream -> read by projections", i, (read - at) * 1000)
        add("read by projections -> seen final by the client", i, (final_wall - read) * 1000)
    return stages, per_order


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=50.0, help="orders per second")
    parser.add_argument("--threads", type=int, default=64, help="client threads")
    parser.add_argument("--poll-ms", type=float, default=100.0, help="how often a client asks for its order")
    parser.add_argument(
        "--poll-every",
        type=int,
        default=4,
        help="clients poll one order in N until it is final (the others are checked once all have settled)",
    )
    parser.add_argument("--customers", type=int, default=500)
    parser.add_argument("--timeout", type=float, default=60.0, help="longest wait for one order to be final")
    parser.add_argument(
        "--retention",
        type=int,
        default=60,
        help="inbox retention in seconds (the outbox keeps a third of it), short so a soak of minutes shows the "
        "tables stay bounded; 0 keeps the settings' defaults (a day and a week)",
    )
    args = parser.parse_args()
    env = make_run_web_env()
    if args.retention:
        env |= {
            "EVENTING_INBOX_RETENTION_SECONDS": str(args.retention),
            "EVENTING_OUTBOX_RETENTION_SECONDS": str(max(args.retention // 3, 5)),
            "EVENTING_PRUNE_INTERVAL_SECONDS": "5",
            "EVENTING_CLAIM_IDLE_MS": "10000",
        }

    with tempfile.TemporaryDirectory() as tmp:
        system = System(Path(tmp), redis_url=REDIS_URL, mongodb_uri=MONGODB_URI, env=env, consumers=PROCFILE_CONSUMERS)
        try:
            system.start()
            system.add_stock({"SOAK-1": 10**9})
            token = system.token()
            assert token

            lock = threading.Lock()
            results: list[tuple[int, float, float, str]] = []  # (index, sent, final, status)
            # Polled orders' correlation ids, with when they were sent and seen final on the wall clock.
            walls: dict[int, tuple[str, float, float]] = {}
            lost: list[int] = []
            unpolled: list[tuple[int, str]] = []
            next_index = iter(range(args.orders))
            start = time.perf_counter() + 1.0

            def client(_worker: int) -> None:
                while True:
                    with lock:
                        i = next(next_index, None)
                    if i is None:
                        return
                    delay = start + i / args.rate - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                    body = {"customer_id": f"soak-{i % args.customers}", "lines": [{"sku": "SOAK-1", "quantity": 1}]}
                    sent, sent_wall = time.perf_counter(), time.time()
                    status, placed, headers = system.request("POST", "/api/orders/", body)
                    if status != 202:
                        with lock:
                            lost.append(i)
                        continue
                    if i % args.poll_every:
                        with lock:
                            unpolled.append((i, placed["id"]))
                        continue
                    deadline = sent + args.timeout
                    while time.perf_counter() < deadline:
                        time.sleep(args.poll_ms / 1000)
                        status, view, _ = system.request("GET", f"/api/orders/{placed['id']}/")
                        if status == 200 and view["status"] in FINAL:
                            with lock:
                                results.append((i, sent, time.perf_counter(), view["status"]))
                                walls[i] = (headers.get("X-Correlation-ID", ""), sent_wall, time.time())
                            break
                    else:
                        with lock:
                            lost.append(i)

            began = time.perf_counter()
            with ThreadPoolExecutor(max_workers=args.threads) as pool:
                list(pool.map(client, range(args.threads)))
            elapsed = time.perf_counter() - began

            order_id = system.request(
                "POST", "/api/orders/", {"customer_id": "raw", "lines": [{"sku": "SOAK-1", "quantity": 1}]}
            )[1]["id"]
            system.wait_settled(timeout=300)
            for i, order in unpolled:  # every order must be final, polled or not
                status, view, _ = system.request("GET", f"/api/orders/{order}/")
                if status != 200 or view["status"] not in FINAL:
                    lost.append(i)
            raw = []
            for _ in range(200):
                t0 = time.perf_counter()
                system.request("GET", f"/api/orders/{order_id}/")
                raw.append((time.perf_counter() - t0) * 1000)
            tables = system.manage(
                "shell",
                "--no-imports",
                "-c",
                "from eventing.models import OutboxEvent as O, ProcessedEvent as P; "
                "print(O.objects.count(), P.objects.count())",
            ).stdout.split()[-2:]
            stages, per_order = stage_breakdown(system, walls)
        finally:
            system.stop()
            system.cleanup()

    results.sort()
    # Waves by when the order was sent: wave 1 is orders 0-999, and so on (a quarter of each is polled).
    by_wave: dict[int, list[float]] = {}
    for i, sent, final_at, _status in results:
        by_wave.setdefault(i // WAVE, []).append((final_at - sent) * 1000)
    waves = [by_wave[n] for n in sorted(by_wave)]
    final = len(results) + len(unpolled) - len([i for i in lost if i % args.poll_every])
    print(f"{final} of {args.orders} orders final ({len(results)} polled), sent over {elapsed:.0f}s")
    print(f"not final: {len(lost)}")
    print(f"raw baseline, GET of an order: p50 {statistics.median(raw):.1f} ms, p99 {pct(raw, 0.99):.1f} ms")
    for number, wave in enumerate(waves, start=1):
        print(
            f"wave {number} (orders {(number - 1) * WAVE}-{number * WAVE - 1}, {len(wave)} polled): POST -> final "
            f"p50 {statistics.median(wave):.0f} ms, p99 {pct(wave, 0.99):.0f} ms"
        )
    if waves:
        first, last = waves[0], waves[-1]
        print(
            f"growth last/first wave: p50 {statistics.median(last) / statistics.median(first):.2f}x, "
            f"p99 {pct(last, 0.99) / pct(first, 0.99):.2f}x; "
            f"p99 first {pct(first, 0.99):.0f} ms, last {pct(last, 0.99):.0f} ms "
            f"({pct(last, 0.99) / statistics.median(raw):.0f}x the raw GET)"
        )
    print("where the time went, per polled order (ms; p50 / p99 of first wave, p50 / p99 of last wave):")
    for stage, by in stages.items():
        first, last = by.get(0, []), by.get(max(by), [])
        if first and last:
            print(
                f"  {stage:<44} {statistics.median(first):7.1f} / {pct(first, 0.99):7.1f}"
                f"   {statistics.median(last):7.1f} / {pct(last, 0.99):7.1f}"
            )
    slowest = sorted(results, key=lambda result: result[1] - result[2])[: max(1, len(results) // 100)]
    print("the slowest 1% of polled orders, their hops (ms, in the order above; * the longest), sent at (s):")
    for i, sent, final_at, _status in slowest:
        hops = per_order.get(i, {})
        longest = max(hops.values(), default=0)
        shown = " ".join(f"{ms:.0f}{'*' if ms == longest else ''}" for ms in hops.values())
        print(f"  order {i}: {(final_at - sent) * 1000:.0f} ms = {shown or '(rejected)'}; sent at {i / args.rate:.1f}")
    print(
        f"outbox rows {tables[0]}, inbox rows {tables[1]} at the end, after {args.orders} orders "
        f"(~{args.orders * 3} events; inbox retention {args.retention or 'default'} s)"
    )


if __name__ == "__main__":
    main()
