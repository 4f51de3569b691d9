"""Entries nobody should have written: a consumer dead-letters each with its raw bytes and carries on.

Everything runs against the real Redis, with entries XADDed as bytes through a client that does not decode.
"""

import dataclasses
import hashlib
import html
import io
import itertools
import json
import threading
import time
import uuid

import hypothesis
import pytest
import redis
from django.core.management import call_command
from django.db import connection, connections
from django.urls import reverse
from hypothesis import strategies as st

from eventing.consumer.health import HealthRecord
from eventing.consumer.runner import StreamConsumer
from eventing.contract import consumers as registry
from eventing.contract.envelope import Envelope
from eventing.models import DeadLetter, DeadLetterAction, ProcessedEvent
from eventing.readside.event_log import collection as event_log
from eventing.services import dead_letter_retry
from eventing.transport.client import get_redis
from eventing.transport.streams import dead_letter_stream, retry_stream
from inventory.events import StockAdded
from orders.models import CatalogItem
from tests.conftest import REPORTS
from tests.eventing.test_consumer import pending_count, stock_added, xadd
from tests.helpers import scratch_consumer

pytestmark = pytest.mark.django_db(transaction=True)

GROUPS = ("inventory", "orders", "projections")
COPY_FIELDS = {b"dead_letter_group", b"dead_letter_reason", b"dead_letter_stream"}


@pytest.fixture
def raw_redis() -> redis.Redis:
    """A client that writes and reads bytes as they are."""
    return get_redis(decode_responses=False)


def envelope_json(**changes) -> bytes:
    """A STOCK_ADDED envelope as JSON, with ``changes`` applied (any JSON value, any shape)."""
    return json.dumps({**stock_added("X-1").to_dict(), **changes}).encode()


DEEP = b'{"a":' * 20_000 + b"1" + b"}" * 20_000

# The six entries that once killed every consumer for good, and the reason each is dead-lettered for.
SIX = {
    "20,000 nested objects": ({b"type": b"STOCK_ADDED", b"data": DEEP}, "oversize"),
    "data not UTF-8": ({b"type": b"STOCK_ADDED", b"data": b"\xff\xfe" + envelope_json()}, "undecodable"),
    "field name not UTF-8": ({b"type": b"STOCK_ADDED", b"\xff\xfe\xfd": b"x"}, "undecodable"),
    "300-character type": ({b"type": b"T" * 300, b"data": envelope_json(type="T" * 300)}, "oversize"),
    "array envelope": ({b"type": b"STOCK_ADDED", b"data": b"[1, 2, 3]"}, "undecodable"),
    "string envelope": ({b"type": b"STOCK_ADDED", b"data": b'"an envelope"'}, "undecodable"),
}  # fmt: skip

# More of the kind: values a database column refuses as they are (NUL, a lone surrogate, too long), and
# envelopes of the wrong shape.
MORE = {
    "NUL in the type field": ({b"type": b"A\x00B", b"data": b'{"id": "\\u0000"}'}, "invalid event"),
    "lone surrogate as the type": ({b"type": b"?", b"data": envelope_json(type="\ud800")}, "unknown type"),
    "lone surrogate in the correlation id": (
        {b"type": b"NOPE", b"data": envelope_json(type="NOPE", correlation_id="\udfff\x00")},
        "unknown type",
    ),
    "number envelope": ({b"data": b"42"}, "undecodable"),
    "empty data": ({b"data": b""}, "undecodable"),
    "version is a string": ({b"data": envelope_json(version="1")}, "invalid event"),
    "aggregate version over 64 bits": ({b"data": envelope_json(aggregate_version=2**64)}, "invalid event"),
    "time out of range in UTC": ({b"data": envelope_json(occurred_at="0001-01-01T00:00:00+01:00")}, "invalid event"),
    "no fields but junk": ({b"\x00": b"\x00", b"\x80": b""}, "undecodable"),
    "every byte": ({b"data": bytes(range(256)), bytes(range(128, 256)): bytes(range(256))}, "undecodable"),
}


def copies(raw_redis: redis.Redis, stream: str) -> dict[bytes, list[dict[bytes, bytes]]]:
    """The entries of the dead-letter stream by the group that copied them, without the copy's own fields."""
    found: dict[bytes, list[dict[bytes, bytes]]] = {}
    for _id, fields in raw_redis.xrange(dead_letter_stream(stream)):
        found.setdefault(fields[b"dead_letter_group"], []).append(
            {name: value for name, value in fields.items() if name not in COPY_FIELDS}
        )
    return found


@pytest.mark.timeout(120)
@pytest.mark.parametrize("cases", [SIX, MORE], ids=["the six", "more"])
def test_every_group_dead_letters_each_hostile_entry_with_its_raw_bytes_and_carries_on(
    redis_client, raw_redis, stream, cases
):
    good = [stock_added("BEFORE-1"), stock_added("AFTER-1")]
    xadd(redis_client, stream, good[0])
    written = {raw_redis.xadd(stream, fields).decode(): (fields, reason) for fields, reason in cases.values()}
    xadd(redis_client, stream, good[1])

    for group in GROUPS:
        consumer = StreamConsumer(name=group, block_ms=5)
        consumer.run_until_idle()  # returns: it did not raise
        assert consumer.dead_lettered == len(cases)
        assert pending_count(redis_client, stream, group) == 0

    for group in GROUPS:
        dead = {d.entry_id: d for d in DeadLetter.objects.filter(consumer_group=group)}
        assert set(dead) == set(written)
        for entry_id, (fields, reason) in written.items():
            assert (dead[entry_id].reason, dead[entry_id].attempts) == (reason, 1)
            assert dead[entry_id].entry_fields() == fields  # the raw bytes, kept
        assert sorted(sorted(copy.items()) for copy in copies(raw_redis, stream)[group.encode()]) == sorted(
            sorted(fields.items()) for fields, _ in cases.values()
        )
    assert set(CatalogItem.objects.values_list("sku", flat=True)) == {"BEFORE-1", "AFTER-1"}
    assert ProcessedEvent.objects.filter(consumer="orders").count() == 2
    assert {record["_id"] for record in event_log().find({})} == {e.id for e in good}


def test_bytes_that_are_not_utf_8_are_kept_as_marked_base64_and_the_rest_as_text(raw_redis, stream):
    fields, _reason = SIX["field name not UTF-8"]
    raw_redis.xadd(stream, {**fields, b"data": b"\x80abc"})
    StreamConsumer(name="orders", block_ms=5).run_until_idle()

    dead = DeadLetter.objects.get()
    # A name that is not UTF-8 cannot be a JSON key: the fields are [name, value] pairs then.
    assert json.loads(dead.payload) == [
        ["type", "STOCK_ADDED"],
        [{"base64": "//79"}, "x"],
        ["data", {"base64": "gGFiYw=="}],
    ]
    raw_redis.xadd(stream, {b"type": b"STOCK_ADDED", b"data": b"\x80abc"})
    StreamConsumer(name="orders", block_ms=5).run_until_idle()
    latest = DeadLetter.objects.latest("id")
    assert json.loads(latest.payload) == {"type": "STOCK_ADDED", "data": {"base64": "gGFiYw=="}}


def test_an_entry_too_large_for_the_table_is_kept_in_the_dead_letter_stream_and_not_retried(
    settings, raw_redis, stream
):
    settings.EVENTING_MAX_PAYLOAD_BYTES = 1000  # the table keeps entries of up to 2,000 bytes
    fields = {b"type": b"STOCK_ADDED", b"data": envelope_json(), b"pad": b"\xff" * 5000}
    raw_redis.xadd(stream, fields)
    StreamConsumer(name="orders", block_ms=5).run_until_idle()

    dead = DeadLetter.objects.get()
    assert (dead.reason, dead.payload) == ("oversize", "")
    size = sum(len(name) + len(value) for name, value in fields.items())
    assert f"The entry ({size} bytes) is too large for this record: it is kept in the dead-letter stream" in (
        dead.error_message
    )
    assert copies(raw_redis, stream) == {b"orders": [fields]}
    [result] = dead_letter_retry(dead_letters=[dead], actor="tester")
    assert not result.done
    assert result.message.endswith(f"(its copy in the dead-letter stream is {dead.dead_letter_entry_id})")


def test_an_extra_field_that_is_not_utf_8_does_not_stop_a_valid_event(raw_redis, stream):
    envelope = stock_added("EXTRA-1")
    raw_redis.xadd(stream, {b"type": b"STOCK_ADDED", b"data": envelope.to_json().encode(), b"\xff": b"\xfe"})

    StreamConsumer(name="orders", block_ms=5).run_until_idle()

    assert CatalogItem.objects.get().sku == "EXTRA-1"  # only data makes the event
    assert not DeadLetter.objects.exists()


@pytest.fixture
def hostile_dead_letters(raw_redis, stream) -> list[DeadLetter]:
    for fields, _reason in [*SIX.values(), *MORE.values()]:
        raw_redis.xadd(stream, fields)
    StreamConsumer(name="orders", block_ms=5).run_until_idle()
    return list(DeadLetter.objects.order_by("id"))


def test_the_admin_lists_and_shows_every_hostile_dead_letter(console, hostile_dead_letters):
    listing = console.get(reverse("admin:eventing_deadletter_changelist"))
    assert listing.status_code == 200
    assert {d.pk for d in listing.context["cl"].result_list} == {d.pk for d in hostile_dead_letters}

    for dead in hostile_dead_letters:
        page = console.get(reverse("admin:eventing_deadletter_change", args=[dead.pk]))
        assert page.status_code == 200
        assert dead.reason in html.unescape(page.content.decode())
    deep = next(d for d in hostile_dead_letters if d.payload.startswith('{"type": "STOCK_ADDED", "data": "{\\"a\\":'))
    shown = html.unescape(console.get(reverse("admin:eventing_deadletter_change", args=[deep.pk])).content.decode())
    assert '"data": "{\\"a\\":{\\"a\\":' in shown  # too deep to read: shown as it was read
    not_utf8 = next(d for d in hostile_dead_letters if d.entry_fields().get(b"data", b"").startswith(b"\xff\xfe"))
    shown = html.unescape(console.get(reverse("admin:eventing_deadletter_change", args=[not_utf8.pk])).content.decode())
    assert '"data": {\n    "base64": "//57' in shown


def test_the_cli_lists_and_shows_every_hostile_dead_letter(hostile_dead_letters):
    out = io.StringIO()
    call_command("dlq", "list", "--limit", "100", stdout=out)
    assert len(out.getvalue().splitlines()) == 1 + len(hostile_dead_letters)
    for dead in hostile_dead_letters:
        out = io.StringIO()
        call_command("dlq", "show", str(dead.pk), stdout=out)
        assert f"reason: {dead.reason}" in out.getvalue().splitlines()
        out.getvalue().encode()  # printable as UTF-8
    listed = io.StringIO()
    call_command("dlq", "list", "--json", "--limit", "100", stdout=listed)
    assert len([json.loads(line) for line in listed.getvalue().splitlines()]) == len(hostile_dead_letters)


def test_a_retried_hostile_dead_letter_goes_back_to_the_dead_letters_byte_for_byte(raw_redis, stream):
    fields, _reason = SIX["data not UTF-8"]
    raw_redis.xadd(stream, fields)
    StreamConsumer(name="orders", block_ms=5).run_until_idle()
    dead = DeadLetter.objects.get()

    [result] = dead_letter_retry(dead_letters=[dead], actor="tester")
    assert result.done
    [(_id, sent)] = raw_redis.xrange(retry_stream(stream, "orders"))
    assert sent == fields
    consumer = StreamConsumer(name="orders", block_ms=5)
    consumer.run_until_idle()

    assert consumer.dead_lettered == 1
    again = DeadLetter.objects.exclude(pk=dead.pk).get()
    assert (again.stream, again.reason, again.entry_fields()) == (retry_stream(stream, "orders"), "undecodable", fields)
    dead.refresh_from_db()
    assert dead.status == "RETRIED"


def test_a_dead_letter_without_an_entry_to_deliver_is_not_retried_and_says_why(redis_client, stream):
    # A pending entry trimmed away before it was read again comes back with no fields at all.
    entry_id = redis_client.xadd(stream, {"type": "STOCK_ADDED"})
    consumer = StreamConsumer(name="orders", block_ms=5)
    consumer.ensure_group()
    consumer.read(">")
    redis_client.xdel(stream, entry_id)
    consumer.run_until_idle()
    dead = DeadLetter.objects.get()
    assert dead.entry_fields() == {}

    [result] = dead_letter_retry(dead_letters=[dead], actor="tester")

    assert not result.done
    assert result.message.startswith("not retried: no stream entry is recorded to deliver again")
    assert DeadLetterAction.objects.get().result == result.message
    dead.refresh_from_db()
    assert dead.status == "PENDING"


def test_a_dead_letter_payload_that_is_not_an_entry_is_refused_by_entry_fields(db):
    for payload in ("not json", "[1]", '{"a": 1}', '{"a": {"base64": "***"}}', '[["a"]]', '{"a": {"hex": "00"}}'):
        with pytest.raises(ValueError, match="not a stream entry's fields"):
            DeadLetter(payload=payload).entry_fields()
    assert DeadLetter(payload=DeadLetter.payload_of({b"\xff": b"", b"": b"\x00"})).entry_fields() == {
        b"\xff": b"",
        b"": b"\x00",
    }


# When the database refuses a write: a trigger of the test's own, so the refusal is the database's.


@pytest.fixture
def refuse_inserts():
    """``refuse(model, condition)``: the database refuses to insert a row of ``model`` whose values meet
    ``condition`` (SQL over NEW), with an error that is not transient; undone after the test."""
    made: list[str] = []

    def refuse(model, condition: str) -> None:
        table, name = model._meta.db_table, f"refuse_{model._meta.model_name}"
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute(
                    f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                    f"IF {condition} THEN RAISE EXCEPTION 'refused by the test'; END IF; RETURN NEW; END $$"
                )
                cursor.execute(f"CREATE TRIGGER {name} BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION {name}()")
            else:
                cursor.execute(
                    f"CREATE TRIGGER {name} BEFORE INSERT ON {table} WHEN {condition} "
                    "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
                )
        made.append(f"{table} {name}")

    yield refuse
    for made_one in made:
        table, name = made_one.split()
        with connection.cursor() as cursor:
            cursor.execute(
                f"DROP TRIGGER IF EXISTS {name}" + (f" ON {table}" if connection.vendor == "postgresql" else "")
            )
            if connection.vendor == "postgresql":
                cursor.execute(f"DROP FUNCTION IF EXISTS {name}()")


def test_a_dead_letter_the_database_refuses_is_recorded_in_a_minimal_form(raw_redis, stream, refuse_inserts):
    refuse_inserts(DeadLetter, "NEW.event_type <> ''")  # the full record names the type; the minimal one does not
    fields, _reason = SIX["300-character type"]
    entry_id = raw_redis.xadd(stream, fields).decode()
    xadd(raw_redis, stream, stock_added("AFTER-1"))

    consumer = StreamConsumer(name="orders", block_ms=5)
    consumer.run_until_idle()

    dead = DeadLetter.objects.get()
    assert (dead.entry_id, dead.reason, dead.event_type) == (entry_id, "oversize", "")
    assert "envelope field 'type' is 300 characters long" in dead.error_message
    assert "Recorded without its details, which the database refused: " in dead.error_message
    assert "refused by the test" in dead.error_message
    assert dead.entry_fields() == fields
    assert dead.dead_letter_entry_id == raw_redis.xrange(dead_letter_stream(stream))[0][0].decode()
    assert CatalogItem.objects.get().sku == "AFTER-1"
    assert pending_count(raw_redis, stream, "orders") == 0


def test_when_the_database_refuses_every_dead_letter_the_copy_in_redis_is_the_record(
    raw_redis, stream, refuse_inserts, caplog
):
    refuse_inserts(DeadLetter, "1 = 1")
    fields, _reason = SIX["data not UTF-8"]
    raw_redis.xadd(stream, fields)
    xadd(raw_redis, stream, stock_added("AFTER-1"))

    StreamConsumer(name="orders", block_ms=5).run_until_idle()

    assert not DeadLetter.objects.exists()
    assert copies(raw_redis, stream) == {b"orders": [fields]}
    assert any(r.levelname == "CRITICAL" and "no dead letter could be recorded" in r.message for r in caplog.records)
    assert CatalogItem.objects.get().sku == "AFTER-1"
    assert pending_count(raw_redis, stream, "orders") == 0


@pytest.mark.timeout(60)
def test_an_entry_that_neither_redis_nor_the_database_will_keep_stays_pending_until_one_does(
    settings, redis_client, raw_redis, stream, refuse_inserts
):
    settings.EVENTING_MAX_BACKOFF_SECONDS = 0.2
    refuse_inserts(DeadLetter, "1 = 1")
    redis_client.set(dead_letter_stream(stream), "not a stream")  # XADD to it: WRONGTYPE
    fields, _reason = SIX["array envelope"]
    entry_id = raw_redis.xadd(stream, fields).decode()
    consumer = StreamConsumer(name="orders", block_ms=5)
    stop = threading.Event()
    thread = threading.Thread(target=run_in_thread, args=(consumer, stop))
    thread.start()
    try:
        wait_for(lambda: "dead-lettered neither in Redis" in health(consumer).reason, what="a back-off")
        time.sleep(0.5)  # a few more rounds of it
        assert thread.is_alive()  # backing off, not crashed
        assert not health(consumer).ready
        assert [p["message_id"] for p in redis_client.xpending_range(stream, "orders", "-", "+", 10)] == [entry_id]

        redis_client.delete(dead_letter_stream(stream))  # Redis takes the copy again
        wait_for(lambda: pending_count(redis_client, stream, "orders") == 0, what="the entry to be dead-lettered")
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert copies(raw_redis, stream) == {b"orders": [fields]}


def health(consumer: StreamConsumer) -> HealthRecord:
    raw = consumer.partitions.redis.get(consumer.partitions.health_key)
    return HealthRecord.from_json(raw) if raw else HealthRecord(ready=False, reason="", at="", processed=0)


def run_in_thread(consumer: StreamConsumer, stop: threading.Event) -> None:
    try:
        consumer.run(stop=stop)
    finally:
        connections.close_all()


def wait_for(predicate, *, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def test_an_entry_that_fails_outside_the_handlers_is_retried_then_dead_lettered_and_the_others_flow(
    settings, redis_client, stream, refuse_inserts
):
    settings.EVENTING_MAX_ATTEMPTS = 2
    settings.EVENTING_RETRY_BASE_MS = 1
    settings.EVENTING_RETRY_MAX_MS = 5
    poison = stock_added("POISON-1")
    refuse_inserts(ProcessedEvent, f"NEW.event_id = '{uuid.UUID(poison.id).hex}'")  # its inbox row is refused
    for envelope in (stock_added("A-1"), poison, stock_added("B-1")):
        xadd(redis_client, stream, envelope)

    consumer = StreamConsumer(name="orders", block_ms=5)
    consumer.run_until_idle()  # returns: the error did not escape

    assert set(CatalogItem.objects.values_list("sku", flat=True)) == {"A-1", "B-1"}
    dead = DeadLetter.objects.get()
    assert (dead.event_id, dead.reason, dead.attempts, dead.handler) == (poison.id, "max attempts", 2, "")
    assert dead.error_class.startswith("django.db.utils.")  # IntegrityError on SQLite, ProgrammingError on PostgreSQL
    assert "refused by the test" in dead.error_message and "Traceback (most recent call last)" in dead.traceback
    assert pending_count(redis_client, stream, "orders") == 0


# Entries a consumer had read but never acked (it crashed on them, or was killed), left in the pending list.


def deliver_without_ack(raw_redis: redis.Redis, stream: str, group: str, consumer_id: str) -> list[str]:
    """What a consumer that died mid-batch leaves: every new entry delivered to it, none acked."""
    StreamConsumer(name=group, block_ms=5).ensure_group()
    [(_stream, delivered)] = raw_redis.xreadgroup(group, consumer_id, {stream: ">"})
    return [entry_id.decode() for entry_id, _fields in delivered]


def write_hostile_and_good(redis_client, raw_redis, stream) -> tuple[dict[str, tuple], list]:
    good = [stock_added("BEFORE-1"), stock_added("AFTER-1")]
    xadd(redis_client, stream, good[0])
    hostile = {raw_redis.xadd(stream, fields).decode(): (fields, reason) for fields, reason in SIX.values()}
    xadd(redis_client, stream, good[1])
    return hostile, good


def test_a_consumer_restarted_with_hostile_entries_in_its_pending_list_dead_letters_them(
    redis_client, raw_redis, stream
):
    hostile, _good = write_hostile_and_good(redis_client, raw_redis, stream)
    held = deliver_without_ack(raw_redis, stream, "orders", "crashed-1")
    assert pending_count(redis_client, stream, "orders") == len(held) == len(hostile) + 2

    consumer = StreamConsumer(name="orders", consumer_id="crashed-1", block_ms=5)
    consumer.run_until_idle()  # its first step re-reads what it held

    assert {d.entry_id: (d.entry_fields(), d.reason) for d in DeadLetter.objects.all()} == hostile
    assert set(CatalogItem.objects.values_list("sku", flat=True)) == {"BEFORE-1", "AFTER-1"}
    assert pending_count(redis_client, stream, "orders") == 0


def test_another_consumer_reclaims_hostile_entries_a_dead_one_held_and_dead_letters_them(
    settings, redis_client, raw_redis, stream
):
    settings.EVENTING_CLAIM_IDLE_MS = 50
    hostile, _good = write_hostile_and_good(redis_client, raw_redis, stream)
    deliver_without_ack(raw_redis, stream, "orders", "dead-1")
    time.sleep(0.2)  # idle for longer than the claim idle time

    heir = StreamConsumer(name="orders", consumer_id="heir-1", block_ms=5)
    heir.run_until_idle()  # it XAUTOCLAIMs before reading

    assert {d.entry_id: (d.entry_fields(), d.reason) for d in DeadLetter.objects.all()} == hostile
    assert set(CatalogItem.objects.values_list("sku", flat=True)) == {"BEFORE-1", "AFTER-1"}
    assert pending_count(redis_client, stream, "orders") == 0
    assert "dead-1" not in {c["name"] for c in redis_client.xinfo_consumers(stream, "orders")}  # forgotten


# Property: whatever the stream holds, every consumer keeps running, applies each valid event once and
# dead-letters each other entry with its raw bytes.
#
# Hypothesis gives an example 8 KiB of drawn choices, too little to draw 1,000 entries byte by byte. So
# it draws 1,000 recipes of a few bytes each (a number that picks a kind of hostile entry and its
# parameter; kinds also rotate with the position, so every example holds every kind), which expand
# deterministically into entries; a few dozen more drawn byte by byte (names, values, text, JSON of any
# shape); and the valid events, some with junk fields of their own and some written twice.

FUZZ_GROUPS = (*GROUPS, "probe")
HANDLING = frozenset({"orders", "projections", "probe"})  # the groups that read STOCK_ADDED's data
MAX_PAYLOAD = 32 * 1024  # small, so that oversize entries stay cheap to write and to keep
UNDECODABLE, INVALID, OVERSIZE = "undecodable", "invalid event", "oversize"


@dataclasses.dataclass(frozen=True)
class Hostile:
    fields: dict[bytes, bytes]
    reasons: frozenset[str]  # the reasons it may be dead-lettered for
    groups: frozenset[str] = frozenset(FUZZ_GROUPS)  # the groups that dead-letter it (the others ack it unread)


def hostile(fields: dict[bytes, bytes], *reasons: str, groups: frozenset[str] = frozenset(FUZZ_GROUPS)) -> Hostile:
    return Hostile(fields, frozenset(reasons), groups)


def noise(param: int, size: int, salt: bytes = b"") -> bytes:
    """``size`` bytes that look random, the same for the same parameter."""
    out = b""
    while len(out) < size:
        out += hashlib.blake2b(f"{param}:{len(out)}".encode() + salt).digest()
    return out[:size]


ENVELOPE_FIELDS = ("id", "type", "version", "occurred_at", "correlation_id", "causation_id", "aggregate_type",
                   "aggregate_id", "aggregate_version", "data")  # fmt: skip
WRONG_VALUES = (True, 1.5, [], {}, None, 7, "x")
FITS = {"version": int, "aggregate_version": int, "data": dict, "causation_id": (str, type(None))}
LIMITS = {"id": 128, "type": 100, "occurred_at": 128, "correlation_id": 128, "causation_id": 128,
          "aggregate_type": 128, "aggregate_id": 128}  # fmt: skip
BAD_TIMES = ("", "yesterday", "2026-01-01T00:00:00", "0001-01-01T00:00:00+01:00", "2026-13-01T00:00:00+00:00")
UNKNOWN_TYPES = ("NOPE_{}", "\x00{}", "\ud800{}", "STOCK_ADDED\n{}", "stock_added{}")
SHAPES = (b"null", b"true", b"0", b"-1.5", b'"s"', b"[]", b"[[{}]]", b"NaN", b"1e999")


def wrong_value(field: str, param: int) -> object:
    fits = FITS.get(field, str)
    wrong = [v for v in WRONG_VALUES if not (isinstance(v, fits) and not (fits is int and isinstance(v, bool)))]
    return wrong[param % len(wrong)]


def out_of_int64(param: int) -> int:
    return 2**63 + param if param % 2 else -(2**63) - 1 - param


def recipe(position: int, number: int) -> Hostile:
    """The hostile entry a drawn number makes at a position of the stream."""
    kinds = len(RECIPES)
    kind, param = RECIPES[(position + number) % kinds], number // kinds
    return kind(param)


def _without(field: str) -> bytes:
    doc = stock_added("X-1").to_dict()
    del doc[field]
    return json.dumps(doc).encode()


RECIPES = [
    lambda p: hostile(list(SIX.values())[p % 6][0], UNDECODABLE, OVERSIZE),  # one of the six, as they were
    lambda p: hostile({b"data": b"[" * (65 + 4 * p) + b"]" * (65 + 4 * p)}, OVERSIZE),
    lambda p: hostile(
        {b"data": envelope_json()[:-1] + b', "deep": ' + b'{"a":' * (64 + p) + b"1" + b"}" * (64 + p) + b"}"},
        OVERSIZE,
    ),
    lambda p: hostile({noise(p, 1 + p % 12, b"n"): noise(p, p % 64, b"v"), b"type": b"STOCK_ADDED"}, UNDECODABLE),
    lambda p: hostile({b"type": b"STOCK_ADDED", b"data": noise(p, 1 + p % 200)}, UNDECODABLE, INVALID),
    lambda p: hostile({b"data": (e := envelope_json())[: p % len(e)] + b"\xff" + e[p % len(e) :]}, UNDECODABLE),
    lambda p: hostile({noise(p, 4) + b"\xff": b"x", b"data": SHAPES[p % len(SHAPES)]}, UNDECODABLE),
    lambda p: hostile(
        {b"data": envelope_json(**{(f := list(LIMITS)[p % 7]): "\u00e9\ud800x"[p % 3] * (LIMITS[f] + 1 + p)})},
        OVERSIZE,
    ),
    lambda p: hostile({b"data": envelope_json(), b"pad": b"x" * (MAX_PAYLOAD + p)}, OVERSIZE),
    lambda p: hostile({b"data": _without(ENVELOPE_FIELDS[p % 10])}, INVALID),
    lambda p: hostile(
        {b"data": envelope_json(**{(f := ENVELOPE_FIELDS[p % 10]): wrong_value(f, p // 10)})}, INVALID
    ),
    lambda p: hostile({b"data": envelope_json(**{("version", "aggregate_version")[p % 2]: out_of_int64(p)})}, INVALID),
    lambda p: hostile({b"data": envelope_json(id=f"not-a-uuid-{p}")}, INVALID),
    lambda p: hostile({b"data": envelope_json(occurred_at=BAD_TIMES[p % len(BAD_TIMES)])}, INVALID),
    lambda p: hostile({b"data": envelope_json(type=UNKNOWN_TYPES[p % len(UNKNOWN_TYPES)].format(p))}, "unknown type"),
    lambda p: hostile({b"data": envelope_json(version=[2 + p, -p][p % 2])}, "unsupported version", groups=HANDLING),
    lambda p: hostile({b"data": envelope_json(data=[{}, {"sku": p}][p % 2])}, INVALID, groups=HANDLING),
    lambda p: hostile({b"data": b""}, UNDECODABLE),
]  # fmt: skip

NAME = st.binary(max_size=12).filter(lambda name: name != b"data")
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=6,
)
# Entries drawn byte by byte. None has the fields of an envelope, so none can be valid.
WILD = st.one_of(
    st.dictionaries(NAME, st.binary(max_size=48), min_size=1, max_size=4).map(lambda f: hostile(f, UNDECODABLE)),
    st.tuples(st.dictionaries(NAME, st.binary(max_size=16), max_size=2), st.binary(max_size=96)).map(
        lambda t: hostile({**t[0], b"data": t[1]}, UNDECODABLE, INVALID)
    ),
    st.text(max_size=48).map(lambda t: hostile({b"data": t.encode(errors="surrogatepass")}, UNDECODABLE, INVALID)),
    JSON_VALUES.map(lambda v: hostile({b"data": json.dumps(v).encode()}, UNDECODABLE, INVALID)),
)
# A valid event's variations: bit 0, a junk field of its own (not UTF-8); bit 1, written twice.
VALID = st.integers(0, 3)

EXAMPLES = itertools.count()  # a name of its own for each call, a replayed example's too


@pytest.fixture
def probe(monkeypatch) -> None:
    """A relational consumer 'probe' that stores one catalogue row per STOCK_ADDED it applies: a second
    application of one event would break the row's unique sku."""
    group = scratch_consumer(monkeypatch, "probe")

    @registry.handles(group, StockAdded)
    def store(event: StockAdded, envelope) -> None:
        CatalogItem.objects.create(sku=f"probe:{event.sku}", name=event.name)


@pytest.mark.timeout(300)
@hypothesis.settings(
    max_examples=3,
    deadline=None,
    database=None,
    phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],  # no shrinking: an example runs 4 consumers
    suppress_health_check=list(hypothesis.HealthCheck),
)
@hypothesis.given(
    recipes=st.lists(st.integers(0, 2**16 - 1), min_size=1000, max_size=1000),
    wild=st.lists(WILD, min_size=20, max_size=40),
    valid=st.lists(VALID, min_size=150, max_size=200),
    order=st.randoms(use_true_random=True),
)
def test_consumers_survive_any_entries_apply_each_valid_event_once_and_dead_letter_the_rest(
    settings, redis_client, raw_redis, stream, probe, recipes, wild, valid, order
):
    started = time.monotonic()
    settings.EVENTING_MAX_PAYLOAD_BYTES = MAX_PAYLOAD
    # Four consumers share the tests' in-memory SQLite, which answers "table is locked" at once rather
    # than waiting: a transient failure, after which a consumer backs off. Briefly, here.
    settings.EVENTING_MAX_BACKOFF_SECONDS = 0.2
    example = f"{stream}-{next(EXAMPLES)}"  # removed with the test's stream (its name is a prefix)
    hostiles = [recipe(position, number) for position, number in enumerate(recipes)] + wild
    envelopes = [stock_added(f"{example[-16:]}-{n}") for n in range(len(valid))]
    writes: list[Hostile | tuple[Envelope, int]] = [*hostiles, *zip(envelopes, valid, strict=True)]
    order.shuffle(writes)

    adds: list[tuple[dict[bytes, bytes], Hostile | None]] = []
    for n, item in enumerate(writes):
        if isinstance(item, Hostile):
            adds.append((item.fields, item))
            continue
        envelope, variation = item
        fields = {b"type": b"STOCK_ADDED", b"data": envelope.to_json().encode()}
        if variation & 1:
            fields[b"\xfe" + noise(n, 3)] = b"\xff"
        adds += [(fields, None)] * (1 + (variation >> 1))
    pipe = raw_redis.pipeline(transaction=False)
    for fields, _item in adds:
        pipe.xadd(example, fields)
    replies = pipe.execute()
    written = {entry_id.decode(): item for entry_id, (_f, item) in zip(replies, adds, strict=True) if item is not None}

    consumers = {group: StreamConsumer(name=group, stream=example, block_ms=50) for group in FUZZ_GROUPS}
    stop, errors = threading.Event(), []
    threads = [threading.Thread(target=run_and_report, args=(c, stop, errors)) for c in consumers.values()]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: all_read(redis_client, example), what="every group to read and ack everything", timeout=120)
        assert all(thread.is_alive() for thread in threads)  # still running: nothing stopped a consumer
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert errors == []
    assert not any(thread.is_alive() for thread in threads)

    valid_ids = {envelope.id for envelope in envelopes}
    for group, consumer in consumers.items():
        expected = {entry_id: h for entry_id, h in written.items() if group in h.groups}
        dead = {d.entry_id: d for d in DeadLetter.objects.filter(stream=example, consumer_group=group)}
        assert set(dead) == set(expected), mismatch(group, dead, expected)
        for entry_id, letter in dead.items():
            assert letter.reason in expected[entry_id].reasons, (group, letter.reason, letter.error_message)
            if letter.payload:  # the raw bytes, kept in the table unless too large for it (see the next test)
                assert letter.entry_fields() == expected[entry_id].fields
            else:
                assert "too large for this record: it is kept in the dead-letter stream" in letter.error_message
        assert consumer.dead_lettered == len(expected)
        # Every one of them, byte for byte, in the dead-letter stream: at least once, as a failed write of the
        # record (a transient one) leaves the entry pending and it is copied again on its next delivery.
        assert {frozenset(c.items()) for c in copies(raw_redis, example)[group.encode()]} == {
            frozenset(h.fields.items()) for h in expected.values()
        }
    for group in ("orders", "probe"):  # the relational ones: one inbox row per event
        applied = ProcessedEvent.objects.filter(consumer=group, event_id__in=valid_ids)
        assert applied.count() == len(valid_ids)
    probed = CatalogItem.objects.filter(sku__startswith=f"probe:{example[-16:]}-")
    assert probed.count() == len(valid_ids)  # each applied once: a second time would have failed on the sku
    assert {r["_id"] for r in event_log().find({"stream": example}, {"_id": 1})} == valid_ids
    REPORTS.append(
        f"hostile entries, example {example.rsplit('-', 1)[1]}: {len(written)} hostile and {len(adds) - len(written)} "
        f"valid ({len(valid_ids)} events) through {len(FUZZ_GROUPS)} consumers in {time.monotonic() - started:.1f}s"
    )


def mismatch(group: str, dead: dict[str, DeadLetter], expected: dict[str, Hostile]) -> str:
    """What differs, readably: the first few entries on each side."""
    missing = [f"{i}: {expected[i].fields!r:.160} ({sorted(expected[i].reasons)})" for i in expected if i not in dead]
    extra = [f"{i}: {dead[i].reason}: {dead[i].error_message:.160}" for i in dead if i not in expected]
    return f"{group}: not dead-lettered {len(missing)}: {missing[:4]}; dead-lettered too {len(extra)}: {extra[:4]}"


def all_read(redis_client: redis.Redis, stream: str) -> bool:
    groups = redis_client.xinfo_groups(stream)
    return len(groups) == len(FUZZ_GROUPS) and all(g["pending"] == 0 and g["lag"] == 0 for g in groups)


def run_and_report(consumer: StreamConsumer, stop: threading.Event, errors: list[BaseException]) -> None:
    try:
        consumer.run(stop=stop)
    except BaseException as exc:  # noqa: BLE001 - surfaced by the test's assertion
        errors.append(exc)
    finally:
        connections.close_all()
