"""Scale-out: the throughput of 1, 2 and 4 consumer processes of one group on a partitioned bus.

    .venv/bin/python bench/scale_out.py [--events 6000] [--partitions 8] [--database postgres|sqlite]

An inventory-like transactional workload (one catalogue upsert per event, over --skus rows, in the
inbox transaction: bench/consumer_handlers.py's "bench-inventory") on P = --partitions streams, events
routed by sku as the relay routes them. For each N in 1, 2, 4 (in the order 1, 2, 4, 4, 2, 1 with
--rounds 2, so a machine that speeds up or slows down favours none): fill a fresh stream set, start N
`manage.py run_consumer` processes with their group placed at the streams' ends, wait until each has
taken its partitions by lease (every partition held), release them together (XGROUP SETID 0 on every
partition) and time until every partition's group has read and acked everything. The processes are not
timed while they start. Scratch stores of the bench's own are dropped at the end. PostgreSQL by default:
SQLite serialises writers, which caps what a second process can add. The last line is the ratio of 2
processes against 1.
"""

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--events", type=int, default=6000, help="events per run")
parser.add_argument("--partitions", type=int, default=8, help="P")
parser.add_argument("--skus", type=int, default=1000, help="distinct rows written")
parser.add_argument("--rounds", type=int, default=1, help="rounds of 1, 2, 4 (then 4, 2, 1) processes")
parser.add_argument("--database", choices=["postgres", "sqlite"], default="postgres")
parser.add_argument("--postgres-url", default="postgres://postgres@127.0.0.1:5433/postgres")
ARGS = parser.parse_args()

TAG = uuid.uuid4().hex[:8]
TMP = tempfile.TemporaryDirectory(prefix="bench-scale-")
PG_DATABASE = f"bench_scale_{TAG}"
if ARGS.database == "postgres":
    os.environ["DATABASE_URL"] = ARGS.postgres_url.rsplit("/", 1)[0] + f"/{PG_DATABASE}"
else:
    os.environ["DATABASE_URL"] = f"sqlite:///{TMP.name}/bench.sqlite3"
STREAM = f"bench-scale-{TAG}"
os.environ["EVENTING_STREAM"] = STREAM
os.environ["EVENTING_PARTITIONS"] = str(ARGS.partitions)
os.environ["EVENTING_LEASE_TTL_MS"] = "3000"
os.environ["EVENTING_EXTRA_HANDLER_MODULES"] = "bench.consumer_handlers"
os.environ["MONGODB_URI"] = (
    os.environ.get("MONGODB_URI", "mongodb://127.0.0.1:27018/eventmono").rsplit("/", 1)[0] + f"/bench_scale_{TAG}"
)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DJANGO_DEBUG", "true")  # a local development run

import psycopg  # noqa: E402

if ARGS.database == "postgres":
    with psycopg.connect(ARGS.postgres_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{PG_DATABASE}"')

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from bench.consumer_handlers import INVENTORY_LIKE  # noqa: E402
from eventing.contract.envelope import Envelope  # noqa: E402
from eventing.models import ProcessedEvent  # noqa: E402
from eventing.transport.client import get_redis  # noqa: E402
from eventing.transport.leases import lease_key  # noqa: E402
from eventing.transport.streams import partition_streams, stream_for  # noqa: E402
from inventory.events import StockAdded  # noqa: E402
from orders.models import CatalogItem  # noqa: E402

GROUP = INVENTORY_LIKE.name
CLIENT = get_redis()


def fill(base: str) -> list[str]:
    streams = partition_streams(stream=base)
    pipe = CLIENT.pipeline(transaction=False)
    for i in range(ARGS.events):
        sku = f"SKU-{i % ARGS.skus:05d}"
        envelope = Envelope.wrap(
            StockAdded(sku=sku, name=sku, quantity=1, on_hand=i, reserved=0), aggregate_version=1 + i
        )
        pipe.xadd(stream_for(sku, stream=base), {"type": envelope.type, "data": envelope.to_json()})
    pipe.execute()
    for stream in streams:
        CLIENT.xgroup_create(stream, GROUP, id="$", mkstream=True)
    return streams


def drained(streams: list[str]) -> bool:
    for stream in streams:
        info = next(g for g in CLIENT.xinfo_groups(stream) if g["name"] == GROUP)
        if info["pending"] or (info.get("lag") or 0):
            return False
    return True


def run(processes: int, round_no: int) -> float:
    base = f"{STREAM}-{round_no}-{processes}"
    ProcessedEvent.objects.all().delete()
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM {CatalogItem._meta.db_table}, {ProcessedEvent._meta.db_table}")
    streams = fill(base)
    env = {**os.environ, "EVENTING_STREAM": base, "LOG_LEVEL": "WARNING"}
    logs = [Path(TMP.name) / f"{base}-{n}.log" for n in range(processes)]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "manage.py"),
                "run_consumer",
                GROUP,
                "--consumer-id",
                f"p{n}",
                "--block-ms",
                "20",
            ],
            cwd=ROOT,
            env=env,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        for n, log in enumerate(logs)
    ]
    try:
        deadline = time.monotonic() + 60
        # Every partition held, by as many owners as processes (each has its share).
        while True:
            owners = {str(CLIENT.get(lease_key(stream=s, group=GROUP)) or "").split(":")[0] for s in streams}
            if "" not in owners and len(owners) == min(processes, len(streams)):
                break
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(
                    f"the consumers did not take their partitions: {[log.read_text()[-500:] for log in logs]}"
                )
            time.sleep(0.05)
        start = time.perf_counter()
        for stream in streams:
            CLIENT.xgroup_setid(stream, GROUP, "0", entries_read=0)
        deadline = time.monotonic() + 600
        while not drained(streams):
            if time.monotonic() > deadline:
                raise RuntimeError("not drained in 600 s")
            time.sleep(0.01)
        elapsed = time.perf_counter() - start
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=60)
    assert ProcessedEvent.objects.filter(consumer=GROUP).count() == ARGS.events
    for key in CLIENT.scan_iter(match=f"*{base}*", count=1000):
        CLIENT.delete(key)
    return ARGS.events / elapsed


def main() -> None:
    rates: dict[int, list[float]] = {1: [], 2: [], 4: []}
    try:
        call_command("migrate", verbosity=0)
        CatalogItem.objects.bulk_create([CatalogItem(sku=f"SKU-{i:05d}", name="seed") for i in range(ARGS.skus)])
        print(f"database: {connection.vendor}; P={ARGS.partitions}; {ARGS.events} events per run; "
              f"{os.cpu_count()} CPU(s), load {os.getloadavg()[0]:.1f}")  # fmt: skip
        for round_no in range(ARGS.rounds):
            for processes in (1, 2, 4) if round_no % 2 == 0 else (4, 2, 1):
                rates[processes].append(run(processes, round_no))
                print(f"round {round_no + 1}, {processes} process(es): {rates[processes][-1]:.0f} ev/s")
    finally:
        connection.close()
        if ARGS.database == "postgres":
            with psycopg.connect(ARGS.postgres_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)')
        TMP.cleanup()
    one, two, four = (statistics.median(rates[n]) for n in (1, 2, 4))
    print(f"1 process: {one:.0f} ev/s; 2 processes: {two:.0f} ev/s; 4 processes: {four:.0f} ev/s")
    print(f"4 processes: {four / one:.2f}x")
    print(f"2 processes: {two / one:.2f}x")


if __name__ == "__main__":
    main()
