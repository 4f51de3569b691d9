"""Entries nobody should have written: a consumer dead-letters each with its raw bytes and carries on.

Everything runs against the real Redis, with entries XADDed as bytes through a client that does not decode.
"""

import html
import io
import json
import threading
import time
import uuid

import pytest
import redis
from django.core.management import call_command
from django.db import connection, connections
from django.urls import reverse

from eventing.consumer.health import HealthRecord
from eventing.consumer.runner import StreamConsumer
from eventing.models import DeadLetter, DeadLetterAction, ProcessedEvent
from eventing.readside.event_log import collection as event_log
from eventing.services import dead_letter_retry
from eventing.transport.client import get_redis
from eventing.transport.streams import dead_letter_stream, retry_stream
from orders.models import CatalogItem
from tests.eventing.test_consumer import pending_count, stock_added, xadd

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
    assert "Recorded without its details, which the database refused: IntegrityError" in dead.error_message or (
        "InternalError" in dead.error_message  # PostgreSQL's RAISE EXCEPTION
    )
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
    raw = consumer.io.redis.get(consumer.io.health_key)
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
    assert dead.error_class in ("django.db.utils.IntegrityError", "django.db.utils.InternalError")
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
