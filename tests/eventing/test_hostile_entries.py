"""Entries nobody should have written: a consumer dead-letters each with its raw bytes and carries on.

Everything runs against the real Redis, with entries XADDed as bytes through a client that does not decode.
"""

import html
import io
import json

import pytest
import redis
from django.core.management import call_command
from django.urls import reverse

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
    "20,000 nested objects": ({b"type": b"STOCK_ADDED", b"data": DEEP}, "undecodable"),
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
    assert '"data": "{\\"a\\":{\\"a\\":' in shown  # too deep to indent: shown as it was read
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
