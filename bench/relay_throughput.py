"""Relay throughput on a full outbox, next to a raw baseline in the same run.

    .venv/bin/python bench/relay_throughput.py [--rows 20000] [--rounds 5] [--profile]

Each round pre-fills --rows unpublished outbox rows (ORDER_CREATED envelopes
of realistic size) in a database of the bench's own — a temporary SQLite file
(in BENCH_TMPDIR if set: BENCH_TMPDIR=/dev/shm keeps the database off the disk
that Redis's AOF writes to), or DATABASE_URL=postgres://… for a scratch
PostgreSQL database the bench creates — and then:

- raw: pipelined XADD of the same fields to a scratch stream, in batches of
  EVENTING_RELAY_BATCH_SIZE, with the rows already in memory (Redis alone,
  through redis-py's pipeline: the baseline of the target);
- raw_packed: the same XADDs sent as the relay sends them to one Redis
  (``send_pipelined``: packed by hiredis, one write per batch, without the
  pipeline's per-command Python work), so relay/raw_packed is what the
  database and the relay's own work cost on top of its Redis writes;
- relay: ``publish_pending`` in a loop until a batch comes back short, as
  ``relay_forever`` does: SELECT, XADD, mark published (on PostgreSQL on a
  thread of its own, while the next batch is read and sent);
- prune: the same rows deleted by ``prune_tables`` (bounded DELETEs) as it
  would once EVENTING_OUTBOX_RETENTION_SECONDS had passed, for the record.

On PostgreSQL the outbox is ANALYZEd after each fill, as autovacuum keeps a
live table: the scratch table would otherwise have no statistics at all. It is
VACUUMed after each prune, as autovacuum would a table whose rows all died:
the next round starts from the table a live outbox would have, not from the
dead rows of every round before it.

It prints each rate (the median of the rounds), relay/raw, the median of the
rounds' ratios (target ≥ 0.5), and relay/raw_packed likewise.
Uses the Redis that `scripts/services start` runs (or REDIS_URL).
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TAG = uuid.uuid4().hex[:8]
TMP = tempfile.TemporaryDirectory(prefix="bench-relay-", dir=os.environ.get("BENCH_TMPDIR"))
BASE_DATABASE_URL = os.environ.get("DATABASE_URL", "")
PG_DATABASE = f"bench_relay_{TAG}"
if BASE_DATABASE_URL.startswith("postgres"):
    import psycopg

    with psycopg.connect(BASE_DATABASE_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{PG_DATABASE}"')
    os.environ["DATABASE_URL"] = BASE_DATABASE_URL.rsplit("/", 1)[0] + f"/{PG_DATABASE}"
else:
    os.environ["DATABASE_URL"] = f"sqlite:///{TMP.name}/bench.sqlite3"
os.environ["EVENTING_STREAM"] = f"bench-relay-{TAG}"
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
# As production runs the relay: debug off (Django's debug cursor quotes every query's parameters once more to
# log it: the 500 ids of each mark, 4% of the relay's time here), so with a secret key of the run's own.
os.environ.setdefault("DJANGO_DEBUG", "false")
os.environ.setdefault("DJANGO_SECRET_KEY", f"bench-{uuid.uuid4().hex}{uuid.uuid4().hex}")
os.environ["LOG_LEVEL"] = "WARNING"

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.utils import timezone  # noqa: E402

from eventing.contract.envelope import Envelope  # noqa: E402
from eventing.models import OutboxEvent  # noqa: E402
from eventing.transport.client import get_redis, send_pipelined  # noqa: E402
from eventing.transport.relay import background_marks, publish_pending  # noqa: E402
from eventing.transport.retention import prune_tables  # noqa: E402
from orders.events import OrderCreated  # noqa: E402


def fill(rows: int) -> None:
    """``rows`` unpublished outbox rows, old enough for the relay's grace period."""
    occurred = datetime.now(UTC) - timedelta(minutes=5)
    batch = []
    for i in range(rows):
        event = OrderCreated(
            order_id=str(uuid.uuid4()),
            customer_id=f"customer-{i % 100}",
            customer_seq=i // 100 + 1,
            lines=[{"sku": f"SKU-{(i + n) % 50}", "quantity": 1 + n} for n in range(3)],
            placed_at=occurred.isoformat(),
            channel="web",
        )
        envelope = Envelope.wrap(event, aggregate_version=1)
        batch.append(
            OutboxEvent(
                event_id=envelope.id,
                event_type=envelope.type,
                stream=settings.EVENTING_STREAM,
                payload=envelope.to_json(),
                occurred_at=occurred,
            )
        )
    OutboxEvent.objects.bulk_create(batch, batch_size=1000)
    if connection.vendor == "postgresql":
        # Statistics, as autovacuum keeps them on a live outbox. A table never analyzed (this scratch one) has
        # PostgreSQL guess a few dozen unpublished rows and sort the whole backlog for every batch, where with
        # statistics, a few rows or many, it walks the index of unpublished rows in id order.
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {connection.ops.quote_name(OutboxEvent._meta.db_table)}")


def raw_xadd(client, stream: str, batch_size: int) -> float:
    """Pipelined XADD of every row's fields, read into memory beforehand: Redis's own rate."""
    fields = [
        {"type": t, "data": p, "timestamp": o.isoformat()}
        for t, p, o in OutboxEvent.objects.order_by("id").values_list("event_type", "payload", "occurred_at")
    ]
    start = time.perf_counter()
    for offset in range(0, len(fields), batch_size):
        pipe = client.pipeline(transaction=False)
        for entry in fields[offset : offset + batch_size]:
            pipe.xadd(stream, entry)
        pipe.execute()
    elapsed = time.perf_counter() - start
    assert client.xlen(stream) == len(fields)
    client.delete(stream)
    return elapsed


def raw_packed(client, stream: str, batch_size: int) -> float:
    """The same XADDs through ``send_pipelined``, the relay's writer: its Redis time without the database."""
    commands = [
        ("XADD", stream, "*", "type", t, "data", p, "timestamp", o.isoformat())
        for t, p, o in OutboxEvent.objects.order_by("id").values_list("event_type", "payload", "occurred_at")
    ]
    start = time.perf_counter()
    for offset in range(0, len(commands), batch_size):
        send_pipelined(client, commands[offset : offset + batch_size])
    elapsed = time.perf_counter() - start
    assert client.xlen(stream) == len(commands)
    client.delete(stream)
    return elapsed


def relay(client, batch_size: int) -> float:
    """publish_pending until a batch comes back short, as relay_forever does: on PostgreSQL each batch marked
    on the thread of background_marks() while the next is read and sent, the last one marked before the clock
    stops."""
    start = time.perf_counter()
    with background_marks() as marks:
        while publish_pending(client=client, batch_size=batch_size, grace_seconds=0, marks=marks) == batch_size:
            pass
    return time.perf_counter() - start


def prune(rows: int) -> float:
    # Pruned as it would be once the retention has passed: a clock moved on, not every row rewritten (an
    # UPDATE of the whole table that no outbox ever sees, which left the next round a table twice as bloated).
    later = timezone.now() + timedelta(seconds=settings.EVENTING_OUTBOX_RETENTION_SECONDS + 60)
    start = time.perf_counter()
    report = prune_tables(now=later)
    elapsed = time.perf_counter() - start
    assert report.outbox == rows, report
    return elapsed


def vacuum() -> None:
    """On PostgreSQL, VACUUM the outbox the prune emptied, as autovacuum would before the next backlog came:
    it vacuums a table once a fifth of its rows are dead, and here all are. The rounds follow each other
    within seconds, before autovacuum comes round (once a minute), so each round met the previous rounds'
    dead rows and index entries and ran slower than the one before (relay/raw 0.69 in the first round,
    0.43-0.58 after it)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM {connection.ops.quote_name(OutboxEvent._meta.db_table)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000, help="outbox rows per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; the median of each rate is reported")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the relay's last round")
    args = parser.parse_args()

    call_command("migrate", verbosity=0)
    client = get_redis()
    stream, scratch, packed = (
        settings.EVENTING_STREAM,
        f"{settings.EVENTING_STREAM}-raw",
        f"{settings.EVENTING_STREAM}-packed",
    )
    batch_size = settings.EVENTING_RELAY_BATCH_SIZE
    rates: dict[str, list[float]] = {"raw": [], "raw_packed": [], "relay": [], "prune": []}
    profiler = None
    try:
        for round_no in range(args.rounds):
            fill(args.rows)
            client.delete(stream, scratch, packed)
            rates["raw"].append(args.rows / raw_xadd(client, scratch, batch_size))
            rates["raw_packed"].append(args.rows / raw_packed(client, packed, batch_size))
            if args.profile and round_no == args.rounds - 1:
                import cProfile

                profiler = cProfile.Profile()
                profiler.enable()
            elapsed = relay(client, batch_size)
            if profiler:
                profiler.disable()
            rates["relay"].append(args.rows / elapsed)
            assert client.xlen(stream) == args.rows
            assert not OutboxEvent.objects.filter(published_at__isnull=True).exists()
            rates["prune"].append(args.rows / prune(args.rows))
            vacuum()
    finally:
        client.delete(stream, scratch, packed)
        connection.close()
        if BASE_DATABASE_URL.startswith("postgres"):
            with psycopg.connect(BASE_DATABASE_URL, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)')
        TMP.cleanup()

    if profiler:
        import pstats

        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
    raw, relayed = statistics.median(rates["raw"]), statistics.median(rates["relay"])
    # Each round's raw and relay runs are seconds apart, so their ratio shrugs off a busy neighbour better
    # than a ratio of medians taken minutes apart.
    ratios = [r / b for r, b in zip(rates["relay"], rates["raw"], strict=True)]
    packed_ratios = [r / b for r, b in zip(rates["relay"], rates["raw_packed"], strict=True)]
    report = {
        "database": connection.vendor,
        "rows": args.rows,
        "batch_size": batch_size,
        "rounds": args.rounds,
        "raw_xadd_per_s": round(raw),
        "raw_packed_per_s": round(statistics.median(rates["raw_packed"])),
        "relay_per_s": round(relayed),
        "relay_to_raw": round(statistics.median(ratios), 2),
        "relay_to_raw_per_round": [round(r, 2) for r in ratios],
        "relay_to_raw_packed": round(statistics.median(packed_ratios), 2),
        "relay_to_raw_packed_per_round": [round(r, 2) for r in packed_ratios],
        "prune_rows_per_s": round(statistics.median(rates["prune"])),
        "per_round": {name: [round(r) for r in values] for name, values in rates.items()},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
