"""Consumer throughput on a pre-filled stream, each path next to a raw baseline in the same run.

    .venv/bin/python bench/consumer_throughput.py [--events 20000] [--database sqlite|postgres]
        [--skip-p1] [--skip-p6] [--faststream]

P1, in this process, --rounds times on a fresh stream of --events STOCK_ADDED entries (the fields
the relay writes: type, data, timestamp), each read by its own group:

- raw: XREADGROUP COUNT 100 and one variadic XACK per batch (redis-py, reading bytes, as the
  consumer's GroupIO does): what Redis alone allows. Two more loops are printed for reference: the same
  with a json.loads of each envelope, and the same with ``Envelope.from_json`` of each (the envelope read
  and checked as the consumer reads it, and nothing else: no event built, no handler called). No consumer
  that reads its envelopes can beat the second;
- idempotent: a StreamConsumer whose only handler is a no-op idempotent one, run_until_idle()
  (target ≥ 0.7x raw);
- transactional: the same with a no-op transactional handler, so every chunk goes through the inbox
  transaction and writes its ProcessedEvent rows (target ≥ 0.25x raw).

The cost of telemetry, on both paths, in the same rounds: "as shipped" is the consumer with its
Prometheus counters and histogram and tracing off (no OTEL_* set, so no span is made); "bare" is the same
with those metrics replaced by no-ops (what the consumer cost before it was instrumented); "traced" turns
tracing on with a provider that exports nowhere (every span made, none sent). The overhead printed is
as shipped against bare (target ≤ 10%).

P6, as separate `manage.py run_consumer` processes: an inventory-like consumer (one catalogue upsert
per event, over --skus rows created beforehand) drains a pre-filled stream of --p6-events entries with
1 process, then another with 2 (--p6-rounds times, in the order 1, 2, 2, 1, ...); the ratio says what
a second process adds, and each process's share is printed. The processes start on a group placed at
the stream's end and are released together (XGROUP SETID 0) once all report ready, so start-up is not
timed; the bench watches XINFO GROUPS until pending and lag are 0, then SIGTERMs them. SQLite
serialises writers (IMMEDIATE transactions): there only the work outside the write transaction
(reading, decoding, acking) overlaps. A second process also needs a spare core: the machine's CPU
count and load are printed.

P5, with --faststream (FastStream is a bench-only dependency: `.venv/bin/pip install -r
requirements-bench.txt`), in this process, --p5-rounds times on a fresh stream of --events entries, each
read by its own group, in alternating order: FastStream's Redis stream subscriber in batch mode
(StreamSub(batch=True, max_records=100) in a consumer group, acking each batch after its handler, as its
default ack policy does), whose handler json-decodes each envelope of its batch and does nothing else,
against the idempotent StreamConsumer above (which also validates each envelope and its event, and counts
it). Each rate is timed from the start of reading until the group has nothing pending or left to read;
the last line is ours against FastStream (target >= 1.0x), the median of each round's ratio.

Everything lives in scratch stores of the bench's own, dropped at the end: a temporary SQLite file or
a PostgreSQL database it creates (--postgres-url, the server `scripts/services start postgres` runs),
streams named after a random tag, a scratch MongoDB database name. The consumers are declared in
bench/consumer_handlers.py. Rates are medians over the rounds; P1 ratios are the median of each
round's ratio, taken seconds apart, which shrugs off a busy neighbour better than a ratio of medians.
"""

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000, help="entries per stream")
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite", help="the relational store")
    parser.add_argument(
        "--postgres-url",
        default="postgres://postgres@127.0.0.1:5433/postgres",
        help="the PostgreSQL server the bench creates its database on (with --database postgres)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="P1 rounds; medians are reported")
    # P6 applies a real write per event, some 20x slower than P1's no-ops: fewer events keep it within minutes.
    parser.add_argument("--p6-events", type=int, default=5_000, help="entries per P6 stream")
    parser.add_argument(
        "--p6-rounds", type=int, default=2, help="P6 rounds, in the order 1, 2, 2, 1, ... processes; means are reported"
    )
    parser.add_argument("--skus", type=int, default=1000, help="distinct rows the P6 handler writes to")
    parser.add_argument("--skip-p6", action="store_true", help="no P6")
    parser.add_argument("--skip-p1", action="store_true", help="no P1")
    parser.add_argument(
        "--faststream",
        action="store_true",
        help="P5: also FastStream's batch stream subscriber against the idempotent consumer (pip install -r "
        "requirements-bench.txt first)",
    )
    parser.add_argument("--p5-rounds", type=int, default=3, help="P5 rounds; medians are reported")
    parser.add_argument(
        "--profile", action="store_true", help="print a cProfile of the last round's idempotent and transactional runs"
    )
    return parser.parse_args()


ARGS = parse_args()
TAG = uuid.uuid4().hex[:8]
TMP = tempfile.TemporaryDirectory(prefix="bench-consumer-")
PG_DATABASE = f"bench_consumer_{TAG}"
if ARGS.database == "postgres":
    os.environ["DATABASE_URL"] = ARGS.postgres_url.rsplit("/", 1)[0] + f"/{PG_DATABASE}"
else:
    os.environ["DATABASE_URL"] = f"sqlite:///{TMP.name}/bench.sqlite3"
STREAM = f"bench-consumer-{TAG}"
MONGO_DB = f"bench_consumer_{TAG}"
BASE_MONGODB_URI = os.environ.get("MONGODB_URI", "mongodb://127.0.0.1:27018/eventmono")
os.environ["MONGODB_URI"] = BASE_MONGODB_URI.rsplit("/", 1)[0] + f"/{MONGO_DB}"
os.environ["EVENTING_STREAM"] = STREAM
os.environ["EVENTING_EXTRA_HANDLER_MODULES"] = "bench.consumer_handlers"
os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
# As production runs the consumers: debug off (Django's debug cursor logs every query, and on SQLite quotes its
# parameters with a query of its own: 6% of the transactional path), so with a secret key of the run's own.
os.environ.setdefault("DJANGO_DEBUG", "false")
os.environ.setdefault("DJANGO_SECRET_KEY", f"bench-{uuid.uuid4().hex}{uuid.uuid4().hex}")
os.environ["LOG_LEVEL"] = "WARNING"

import django  # noqa: E402

django.setup()

import psycopg  # noqa: E402
import pymongo  # noqa: E402
import redis  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from bench.consumer_handlers import IDEMPOTENT, INVENTORY_LIKE, TRANSACTIONAL  # noqa: E402
from eventing.consumer.health import health_key  # noqa: E402
from eventing.consumer.partitions import Partitions  # noqa: E402
from eventing.consumer.runner import StreamConsumer  # noqa: E402
from eventing.contract.envelope import Envelope  # noqa: E402
from eventing.models import ProcessedEvent  # noqa: E402
from inventory.events import StockAdded  # noqa: E402
from orders.models import CatalogItem  # noqa: E402

RAW_GROUP = "bench-raw"
# As EVENTING_READ_COUNT's default: the raw loop reads what the consumer reads per call.
READ_COUNT = 100
# How long a waiting P6 consumer blocks per read: it bounds the wait between its release and its first read.
P6_BLOCK_MS = 20
# A stuck run fails the bench rather than hanging it.
P6_TIMEOUT_SECONDS = 300


def sku(i: int) -> str:
    return f"SKU-{i % ARGS.skus:05d}"


def fill(client: redis.Redis, stream: str, events: int) -> None:
    """``events`` STOCK_ADDED entries with the fields the relay writes."""
    for start in range(0, events, 1000):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(start + 1000, events)):
            added = StockAdded(sku=sku(i), name=f"item {i}", quantity=5, on_hand=5 + i, reserved=0)
            envelope = Envelope.wrap(added, aggregate_version=1 + i // ARGS.skus)
            pipe.xadd(
                stream,
                {"type": envelope.type, "data": envelope.to_json(), "timestamp": envelope.occurred_at.isoformat()},
            )
        pipe.execute()
    assert client.xlen(stream) == events


def drained(client: redis.Redis, stream: str, group: str) -> bool:
    info = next(g for g in client.xinfo_groups(stream) if g["name"] == group)
    if info["pending"]:
        return False
    if info.get("lag") is not None:
        return info["lag"] == 0
    # Redis cannot always tell the lag: compare the group's position with the stream's last entry.
    return info["last-delivered-id"] == client.xinfo_stream(stream)["last-generated-id"]


def raw_read(client: redis.Redis, reader: redis.Redis, stream: str, events: int, *, parse: str = "") -> float:
    """XREADGROUP COUNT 100 and one XACK per batch until the group has read everything: Redis's own rate.
    ``reader`` reads bytes, as the consumers do. With ``parse``, each entry's envelope is also read: "json",
    decoded and json.loads-ed; "envelope", read and checked by ``Envelope.from_json`` as the consumer reads
    it, and nothing more: the floor of any consumer that reads its envelopes."""
    group = f"{RAW_GROUP}-{parse}" if parse else RAW_GROUP
    client.xgroup_create(stream, group, id="0")
    done = 0
    start = time.perf_counter()
    while response := reader.xreadgroup(group, "raw", {stream: ">"}, count=READ_COUNT):
        entries = response[0][1]
        if parse == "json":
            for _entry_id, fields in entries:
                json.loads(fields[b"data"].decode())
        elif parse == "envelope":
            for _entry_id, fields in entries:
                Envelope.from_json(fields[b"data"])
        reader.xack(stream, group, *(entry_id for entry_id, _fields in entries))
        done += len(entries)
    elapsed = time.perf_counter() - start
    assert done == events and drained(client, stream, group)
    return elapsed


def consume(client: redis.Redis, name: str, stream: str, events: int, profiler=None, *, group: str = "") -> float:
    """A StreamConsumer of ``name`` on ``stream`` (in its own group ``group``), run until idle."""
    consumer = StreamConsumer(name=name, stream=stream, consumer_id="bench", count=READ_COUNT)
    if group and group != name:  # the same consumer reading with a group of its own
        consumer.group = group
        consumer.partitions = Partitions(
            stream=stream,
            partitions=1,
            group=group,
            consumer_id="bench",
            count=READ_COUNT,
            block_ms=consumer.partitions.block_ms,
        )
    if profiler:
        profiler.enable()
    start = time.perf_counter()
    consumer.run_until_idle(max_retry_wait=0)
    elapsed = time.perf_counter() - start
    if profiler:
        profiler.disable()
    assert consumer.processed == events and consumer.dead_lettered == 0, (consumer.processed, events)
    assert drained(client, stream, group or name)
    return elapsed


class _Off:
    """A metric that records nothing: the consumer as it was before it counted anything."""

    def labels(self, *_labels: str) -> "_Off":
        return self

    def inc(self, *_amount: float) -> None:
        pass

    def observe(self, *_value: float) -> None:
        pass


@contextmanager
def telemetry(mode: str) -> Iterator[None]:
    """``shipped``: as is (tracing off); ``bare``: metrics replaced by no-ops; ``traced``: tracing on, exporting
    nowhere."""
    from eventing.consumer import applying, runner
    from eventing.telemetry import tracing

    names = {runner: ["EVENTS_PROCESSED", "EVENTS_FAILED", "EVENTS_RETRIED", "EVENTS_DEAD_LETTERED"]}
    names[applying] = ["HANDLER_SECONDS"]
    saved = {(module, name): getattr(module, name) for module, module_names in names.items() for name in module_names}
    if mode == "bare":
        for module, name in saved:
            setattr(module, name, _Off())
    if mode == "traced":
        from opentelemetry.sdk.trace import TracerProvider

        tracing.configure(service_name="bench", provider=TracerProvider())
    try:
        yield
    finally:
        for (module, name), metric in saved.items():
            setattr(module, name, metric)
        if mode == "traced":
            tracing.shutdown()


TELEMETRY_MODES = ("shipped", "bare", "traced")


def p1_round(client: redis.Redis, round_no: int, profilers: dict | None = None) -> dict[str, float]:
    stream = f"{STREAM}-p1-{round_no}"
    fill(client, stream, ARGS.events)
    ProcessedEvent.objects.all().delete()  # every round starts from an empty inbox
    reader = redis.Redis.from_url(settings.REDIS_URL, decode_responses=False)  # bytes, as GroupIO reads
    rates = {"raw": ARGS.events / raw_read(client, reader, stream, ARGS.events)}
    rates["raw_json"] = ARGS.events / raw_read(client, reader, stream, ARGS.events, parse="json")
    rates["raw_envelope"] = ARGS.events / raw_read(client, reader, stream, ARGS.events, parse="envelope")
    # Each mode's run reads the stream with groups of its own; the order rotates by round, so a machine that
    # speeds up or slows down during a round favours no mode.
    modes = TELEMETRY_MODES[round_no % 3 :] + TELEMETRY_MODES[: round_no % 3]
    for mode in modes:
        for path, name in (("idempotent", IDEMPOTENT.name), ("transactional", TRANSACTIONAL.name)):
            group = name if mode == "shipped" else f"{name}-{mode}"
            profiler = profilers.get(path) if profilers and mode == "shipped" else None
            if path == "transactional":
                ProcessedEvent.objects.all().delete()  # each mode applies every event, none a duplicate
            with telemetry(mode):
                key = path if mode == "shipped" else f"{path}_{mode}"
                rates[key] = ARGS.events / consume(client, name, stream, ARGS.events, profiler, group=group)
    assert ProcessedEvent.objects.filter(consumer=TRANSACTIONAL.name).count() == ARGS.events
    client.delete(stream)
    return rates


def start_consumer(stream: str, consumer_id: str, log: Path) -> subprocess.Popen:
    command = [sys.executable, str(ROOT / "manage.py"), "run_consumer", INVENTORY_LIKE.name]
    command += ["--stream", stream, "--consumer-id", consumer_id, "--block-ms", str(P6_BLOCK_MS)]
    # INFO for its closing "stopped after N event(s)" line: the consumer logs nothing per event at INFO.
    env = {**os.environ, "LOG_LEVEL": "INFO"}
    with log.open("w") as out:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def p6_run(client: redis.Redis, processes: int, round_no: int) -> tuple[float, list[int]]:
    """Drain a pre-filled stream with ``processes`` run_consumer processes: the seconds it took, and
    how many events each process applied."""
    stream, group = f"{STREAM}-p6-{round_no}-{processes}", INVENTORY_LIKE.name
    fill(client, stream, ARGS.p6_events)
    ProcessedEvent.objects.all().delete()
    if connection.vendor == "postgresql":  # the previous run's dead row versions would slow this one
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM {CatalogItem._meta.db_table}, {ProcessedEvent._meta.db_table}")
    # At the end: the processes start, read nothing, and say they are ready; then all are released at once.
    client.xgroup_create(stream, group, id="$")
    ids = [f"p{n}" for n in range(1, processes + 1)]
    logs = [Path(TMP.name) / f"{stream}-{consumer_id}.log" for consumer_id in ids]
    procs = [start_consumer(stream, consumer_id, log) for consumer_id, log in zip(ids, logs, strict=True)]
    try:
        keys = [health_key(stream=stream, group=group, consumer_id=consumer_id) for consumer_id in ids]
        deadline = time.monotonic() + 60
        while client.exists(*keys) < processes:
            if time.monotonic() > deadline or any(proc.poll() is not None for proc in procs):
                raise RuntimeError(f"the consumers did not start: {tail(logs)}")
            time.sleep(0.05)
        start = time.perf_counter()
        client.xgroup_setid(stream, group, "0", entries_read=0)
        deadline = time.monotonic() + P6_TIMEOUT_SECONDS
        while not drained(client, stream, group):
            if time.monotonic() > deadline or any(proc.poll() is not None for proc in procs):
                raise RuntimeError(f"{processes} process(es) did not drain {stream}: {tail(logs)}")
            time.sleep(0.005)
        elapsed = time.perf_counter() - start
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert ProcessedEvent.objects.filter(consumer=group).count() == ARGS.p6_events
    if any(proc.returncode for proc in procs):
        print(f"warning: a consumer exited with {[p.returncode for p in procs]}: {tail(logs)}")
    shares = []
    for log in logs:
        stopped = re.search(r"stopped after (\d+) event", log.read_text())
        shares.append(int(stopped.group(1)) if stopped else -1)
    client.delete(stream)
    return elapsed, shares


def faststream_read(client: redis.Redis, stream: str, events: int) -> float:
    """FastStream's batch stream subscriber draining ``stream`` in a group of its own: the seconds from the
    start of reading until the group has nothing left to read or pending."""
    import asyncio

    from faststream.redis import RedisBroker, StreamSub

    group = "bench-faststream"
    client.xgroup_create(stream, group, id="0")  # from the start, as every group here reads

    async def run() -> float:
        # Without logging, as our consumer logs nothing per batch at the bench's WARNING level.
        broker = RedisBroker(settings.REDIS_URL, logger=None)
        handled = 0
        sub = StreamSub(stream, group=group, consumer="bench", batch=True, max_records=READ_COUNT, polling_interval=100)

        @broker.subscriber(stream=sub)
        async def handle(body: list) -> None:  # type: ignore[type-arg]  # a bare list: FastStream validates nothing more
            nonlocal handled
            for item in body:  # each entry's fields, as FastStream decodes them; the envelope is their data
                json.loads(item["data"])
            handled += len(body)

        await broker.connect()
        start = time.perf_counter()
        await broker.start()
        while handled < events or not drained(client, stream, group):
            await asyncio.sleep(0.001)
        elapsed = time.perf_counter() - start
        await broker.stop()
        return elapsed

    elapsed = asyncio.run(run())
    assert drained(client, stream, group)
    return elapsed


def faststream_version() -> str:
    from importlib.metadata import version

    return version("faststream")


def faststream_json() -> str:
    from faststream._internal import _compat  # where FastStream picks its JSON library

    return "orjson" if getattr(_compat, "orjson", None) else "json"


def p5_round(client: redis.Redis, round_no: int) -> dict[str, float]:
    """FastStream's batch subscriber and our idempotent consumer on one pre-filled stream, in turn."""
    stream = f"{STREAM}-p5-{round_no}"
    fill(client, stream, ARGS.events)
    rates: dict[str, float] = {}
    runs = {
        "faststream": lambda: faststream_read(client, stream, ARGS.events),
        "ours": lambda: consume(client, IDEMPOTENT.name, stream, ARGS.events, group=f"{IDEMPOTENT.name}-p5"),
    }
    for name in sorted(runs, reverse=round_no % 2 == 1):  # in turn first, so neither is favoured
        rates[name] = ARGS.events / runs[name]()
    client.delete(stream)
    return rates


def tail(logs: list[Path]) -> str:
    return " | ".join(f"{log.name}: {log.read_text()[-600:]!r}" for log in logs if log.exists())


def cleanup(client: redis.Redis) -> None:
    """Every Redis key named after this run's streams (retry and dead-letter streams, failure
    counts, health records), the PostgreSQL database, the MongoDB database and the temporary
    directory; each step on its own, so one store that is down leaves the others cleaned."""

    def drop_redis_keys() -> None:
        for key in client.scan_iter(match=f"*{STREAM}*", count=1000):
            client.delete(key)

    def drop_postgres_database() -> None:
        connection.close()
        if ARGS.database == "postgres":
            with psycopg.connect(ARGS.postgres_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)')

    def drop_mongo_database() -> None:
        # Nothing here writes to MongoDB, so this is a no-op unless that changes; short timeouts, as a
        # busy FerretDB must not hold the bench up.
        uri = os.environ["MONGODB_URI"]
        with pymongo.MongoClient(uri, serverSelectionTimeoutMS=3000, socketTimeoutMS=10_000) as mongo:
            mongo.drop_database(MONGO_DB)

    for step, what in (
        (drop_redis_keys, f"Redis keys *{STREAM}*"),
        (drop_postgres_database, f"PostgreSQL database {PG_DATABASE}"),
        (drop_mongo_database, f"MongoDB database {MONGO_DB}"),
        (TMP.cleanup, TMP.name),
    ):
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - report what is left behind and clean up the rest
            print(f"warning: could not remove {what}: {type(exc).__name__}: {exc}")


def main() -> None:
    if ARGS.database == "postgres":
        with psycopg.connect(ARGS.postgres_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{PG_DATABASE}"')
    # The project's client settings: decode_responses=True, as eventing/transport/client.py.
    client = redis.Redis.from_url(settings.REDIS_URL, decode_responses=True)
    profilers = None
    if ARGS.profile:
        import cProfile

        profilers = {"idempotent": cProfile.Profile(), "transactional": cProfile.Profile()}
    rounds: list[dict[str, float]] = []
    p6: dict[int, list[float]] = {1: [], 2: []}
    p5: list[dict[str, float]] = []
    machine = ""
    try:
        call_command("migrate", verbosity=0)
        # Two processes can only scale with idle cores: say how busy the machine was.
        machine = f"{os.cpu_count()} CPU(s), load average {', '.join(f'{n:.1f}' for n in os.getloadavg())} at the start"
        print(f"database: {connection.vendor} ({connection.settings_dict['NAME']}); stream {STREAM}*")
        print(f"machine: {machine}")
        for round_no in range(0 if ARGS.skip_p1 else ARGS.rounds):
            last = round_no == ARGS.rounds - 1
            rates = p1_round(client, round_no, profilers if last else None)
            rounds.append(rates)
            print(
                f"P1 round {round_no + 1}: raw {rates['raw']:.0f} ev/s (raw+json {rates['raw_json']:.0f},"
                f" raw+envelope {rates['raw_envelope']:.0f}),"
                f" idempotent {rates['idempotent']:.0f} ev/s, transactional {rates['transactional']:.0f} ev/s;"
                f" bare {rates['idempotent_bare']:.0f} / {rates['transactional_bare']:.0f},"
                f" traced {rates['idempotent_traced']:.0f} / {rates['transactional_traced']:.0f}"
            )
        if not ARGS.skip_p6:
            CatalogItem.objects.bulk_create(
                [CatalogItem(sku=sku(i), name="seed") for i in range(ARGS.skus)], batch_size=1000
            )
            for round_no in range(ARGS.p6_rounds):
                # 1, 2 then 2, 1: a machine that slows down or speeds up during the bench favours neither.
                for processes in (1, 2) if round_no % 2 == 0 else (2, 1):
                    elapsed, shares = p6_run(client, processes, round_no)
                    p6[processes].append(ARGS.p6_events / elapsed)
                    print(
                        f"P6 round {round_no + 1}, {processes} process(es): {p6[processes][-1]:.0f} ev/s"
                        f" (events per process: {shares})"
                    )
        for round_no in range(ARGS.p5_rounds if ARGS.faststream else 0):
            p5.append(p5_round(client, round_no))
            print(
                f"P5 round {round_no + 1}: FastStream batch {p5[-1]['faststream']:.0f} ev/s,"
                f" ours {p5[-1]['ours']:.0f} ev/s"
            )
    finally:
        cleanup(client)

    if profilers:
        import pstats

        for path, profiler in profilers.items():
            print(f"\n== cProfile of the {path} run ==")
            stats = pstats.Stats(profiler)
            stats.sort_stats("cumulative").print_stats(r"eventing|django/db|redis/client", 30)
            stats.sort_stats("tottime").print_stats(15)

    lines = [f"database: {connection.vendor}; machine: {machine}"]
    if rounds:
        raw = statistics.median(r["raw"] for r in rounds)
        raw_json = statistics.median(r["raw_json"] for r in rounds)
        raw_envelope = statistics.median(r["raw_envelope"] for r in rounds)
        idem = statistics.median(r["idempotent"] for r in rounds)
        trans = statistics.median(r["transactional"] for r in rounds)
        idem_ratio = statistics.median(r["idempotent"] / r["raw"] for r in rounds)
        trans_ratio = statistics.median(r["transactional"] / r["raw"] for r in rounds)
        lines += [
            f"P1: {ARGS.events} events per run, medians of {ARGS.rounds} round(s);"
            f" commit every {settings.EVENTING_COMMIT_EVERY} at most, in {settings.EVENTING_COMMIT_MS:g} ms;"
            f" read count {READ_COUNT}",
            f"P1 raw: {raw:.0f} ev/s; idempotent: {idem:.0f} ev/s ({idem_ratio:.2f}x, target >= 0.7x);"
            f" transactional: {trans:.0f} ev/s ({trans_ratio:.2f}x, target >= 0.25x)",
            f"   (for reference, raw + json.loads of each envelope: {raw_json:.0f} ev/s,"
            f" {statistics.median(r['raw_json'] / r['raw'] for r in rounds):.2f}x raw;"
            f" raw + Envelope.from_json of each, the floor of a consumer: {raw_envelope:.0f} ev/s,"
            f" {statistics.median(r['raw_envelope'] / r['raw'] for r in rounds):.2f}x raw)",
        ]
        for path in ("idempotent", "transactional"):
            # Ratios per round, then the median: each round's modes ran seconds apart.
            overhead = statistics.median(r[f"{path}_bare"] / r[path] - 1 for r in rounds)
            traced = statistics.median(r[f"{path}_bare"] / r[f"{path}_traced"] - 1 for r in rounds)
            lines.append(
                f"telemetry, {path}: bare {statistics.median(r[f'{path}_bare'] for r in rounds):.0f} ev/s,"
                f" as shipped {statistics.median(r[path] for r in rounds):.0f} ev/s (metrics on, tracing off):"
                f" overhead {overhead:+.1%} (target <= 10%); traced, exporting nowhere:"
                f" {statistics.median(r[f'{path}_traced'] for r in rounds):.0f} ev/s ({traced:+.1%})"
            )
    if p6[1]:
        one, two = statistics.mean(p6[1]), statistics.mean(p6[2])
        lines.append(
            f"P6 inventory-like ({ARGS.p6_events} events, {ARGS.skus} skus, means of {ARGS.p6_rounds} round(s)),"
            f" 1 process: {one:.0f} ev/s, 2 processes: {two:.0f} ev/s; P6 2 processes: {two / one:.2f}x"
        )
    if p5:
        lines.append(
            f"P5 ({ARGS.events} events per run, medians of {ARGS.p5_rounds} round(s)): FastStream batch"
            f" {statistics.median(r['faststream'] for r in p5):.0f} ev/s, ours (idempotent)"
            f" {statistics.median(r['ours'] for r in p5):.0f} ev/s;"
            f" P5 ours/FastStream: {statistics.median(r['ours'] / r['faststream'] for r in p5):.2f}x (target >= 1.0x)"
        )
        # FastStream reads and writes its JSON with orjson when it is installed, else with json.
        lines.append(f"   (FastStream {faststream_version()}, its JSON by {faststream_json()})")
    print("\n== consumer throughput ==\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
