import dataclasses
import json
import time
import uuid
from unittest import mock

import hypothesis
import pytest
from hypothesis import strategies as st

from eventing.contract import envelope as envelope_module
from eventing.contract import events as events_module
from eventing.contract.context import MAX_ID_LENGTH
from eventing.contract.envelope import FIELD_MAX_LENGTHS, MAX_NESTING, TRACE_FIELDS, Envelope, nesting
from eventing.contract.errors import EventError, OversizeEvent
from eventing.contract.events import Event, registered_event_types
from inventory.events import StockAdded
from orders.events import OrderCreated

SAMPLE_VALUES = {str: "x-1", int: 3}


def sample(cls: type[Event]) -> Event:
    """An instance of ``cls`` with a value of the right shape for every field."""
    import dataclasses
    import typing

    values = {}
    for field in dataclasses.fields(cls):
        hint = typing.get_type_hints(cls)[field.name]
        if typing.get_origin(hint) is list:
            item = typing.get_args(hint)[0]
            values[field.name] = [{k: SAMPLE_VALUES[t] for k, t in typing.get_type_hints(item).items()}]
        else:
            values[field.name] = SAMPLE_VALUES[hint]
    return cls(**values)


@pytest.mark.parametrize("event_type", sorted(registered_event_types()))
def test_every_event_type_survives_a_json_round_trip(event_type):
    cls = registered_event_types()[event_type]
    event = sample(cls)
    envelope = Envelope.wrap(event, aggregate_version=4)

    decoded = Envelope.from_json(json.loads(json.dumps(envelope.to_json())))

    assert decoded == envelope
    assert decoded.event() == event
    assert decoded.aggregate_type == cls.AGGREGATE_TYPE
    assert decoded.aggregate_id == event.aggregate_id
    assert decoded.aggregate_version == 4


def test_the_envelope_carries_every_contract_field():
    envelope = Envelope.wrap(sample(OrderCreated), aggregate_version=1)
    doc = json.loads(envelope.to_json())
    assert set(doc) == {
        "id", "type", "version", "occurred_at", "correlation_id", "causation_id",
        "aggregate_type", "aggregate_id", "aggregate_version", "data",
    }  # fmt: skip
    assert doc["occurred_at"].endswith("+00:00")


def test_the_envelopes_document_is_a_copy_and_its_json_is_that_document_with_sorted_keys():
    traced = {"traceparent": f"00-{'a' * 32}-{'b' * 16}-01"}
    envelope = Envelope.wrap(sample(OrderCreated), aggregate_version=1, trace=traced)
    doc = envelope.to_dict()
    assert envelope.to_json() == json.dumps(doc, separators=(",", ":"), sort_keys=True)
    assert doc["traceparent"] == traced["traceparent"] and "tracestate" not in doc

    doc["data"]["lines"].append({"sku": "X", "quantity": 1})  # a caller's changes stay in its copy
    assert envelope.to_dict()["data"] == json.loads(envelope.to_json())["data"] != doc["data"]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("aggregate_version"), "aggregate_version"),
        (lambda d: d.update(version="1"), "wrong type"),
        (lambda d: d.update(version=True), "wrong type"),
        (lambda d: d.update(occurred_at="2026-01-01T00:00:00"), "time zone"),
        (lambda d: d.update(data=[]), "wrong type"),
        (lambda d: d.update(id="not-a-uuid"), "not a UUID"),
        (lambda d: d.update(occurred_at="yesterday"), "not ISO 8601"),
    ],
)
def test_a_malformed_envelope_is_refused_with_the_reason(mutate, message):
    doc = Envelope.wrap(sample(StockAdded), aggregate_version=1).to_dict()
    mutate(doc)
    with pytest.raises(EventError, match=message):
        Envelope.from_json(json.dumps(doc))


def test_undecodable_json_unknown_types_newer_versions_and_missing_fields_are_refused():
    with pytest.raises(EventError, match="not valid JSON"):
        Envelope.from_json("{nope")
    doc = Envelope.wrap(sample(StockAdded), aggregate_version=1).to_dict()
    with pytest.raises(EventError, match="unknown event type"):
        Envelope.from_dict({**doc, "type": "NO_SUCH_EVENT"}).event()
    with pytest.raises(EventError, match="newer"):
        Envelope.from_dict({**doc, "version": 99}).event()
    with pytest.raises(EventError, match="missing field"):
        Envelope.from_dict({**doc, "data": {"sku": "A"}}).event()


def nested(levels: int) -> str:
    """An envelope whose extra key holds arrays nested so that the whole is ``levels`` deep."""
    doc = json.dumps(Envelope.wrap(sample(StockAdded), aggregate_version=1).to_dict())
    return doc[:-1] + ', "extra": ' + "[" * (levels - 1) + "]" * (levels - 1) + "}"


def test_nesting_is_measured_outside_strings():
    assert nesting('{"a": [[1]]}') == 3
    assert nesting('{"s": "' + "[" * 100 + '", "a": [[1]]}') == 3  # brackets in a string do not nest
    assert nesting('{"s": "\\"' + "{" * 100 + '"}') == 1  # nor after an escaped quote
    assert nesting("[" * 70 + "]" * 70) == 70
    assert nesting(nested(MAX_NESTING)) == MAX_NESTING


def test_an_envelope_nested_deeper_than_the_limit_is_oversize_whatever_the_recursion_limit():
    assert Envelope.from_json(nested(MAX_NESTING)).type == "STOCK_ADDED"  # extra keys are ignored
    with pytest.raises(OversizeEvent, match=f"nested {MAX_NESTING + 1} levels deep, over the 64-level limit"):
        Envelope.from_json(nested(MAX_NESTING + 1))
    with pytest.raises(OversizeEvent, match="nested 20000 levels deep"):
        Envelope.from_json('{"a":' * 20_000 + "1" + "}" * 20_000)


# The fast reading of an entry's bytes (orjson, then checks of JSON's exact types) must give what the full
# reading gives (json, then every check in its order): the same envelope and event, or the same error.

UUIDS = ("4f0e5e9a-3b1c-4d2e-9f00-0123456789ab", "4F0E5E9A-3B1C-4D2E-9F00-0123456789AB",
         "{4f0e5e9a-3b1c-4d2e-9f00-0123456789ab}", "urn:uuid:4f0e5e9a-3b1c-4d2e-9f00-0123456789ab",
         "4f0e5e9a3b1c4d2e9f000123456789ab", "4f0e5e9a-3b1c-4d2e-9f00-0123456789ab\n", "not-a-uuid")  # fmt: skip
TIMES = ("2026-01-01T00:00:00+00:00", "2026-01-01T01:00:00+01:00", "2026-01-01T00:00:00Z", "2026-01-01T00:00:00",
         "0001-01-01T00:00:00+01:00", "2026-13-01T00:00:00+00:00", "yesterday", "")  # fmt: skip
# Numbers as text, spliced into the JSON: integers about the 64-bit limits, and ones json and orjson read
# differently (orjson refuses NaN and infinities; it would read an integer beyond 64 bits as a float).
NUMBERS = ("9223372036854775807", "9223372036854775808", "-9223372036854775808", "-9223372036854775809",
           "18446744073709551615", "18446744073709551616", "123456789012345678901234567890", "1e999", "-1E400",
           "NaN", "Infinity", "1.5", "-0", "0.1e-400", "1.7976931348623157e308")  # fmt: skip
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=6,
)
VALUES = st.one_of(JSON, st.sampled_from(UUIDS + TIMES))
# Values one JSON type away from a field's: a bool for an int, a float for an int, text for a number, ...
SCALARS = (True, False, 0, 1, -1, 1.0, "1", "", None, [], {}, [1], {"a": 1})
# The longest value of each text field: the values drawn for it are about that long.
LIMITS = {**FIELD_MAX_LENGTHS, **TRACE_FIELDS}
ENVELOPE_KEYS = ("id", "type", "version", "occurred_at", "correlation_id", "causation_id", "aggregate_type",
                 "aggregate_id", "aggregate_version", "data", "traceparent", "tracestate", "extra")  # fmt: skip


@st.composite
def entry_data(draw: st.DrawFn) -> bytes:
    """An envelope as an entry's bytes, with a few of its fields and of its data's changed (often none of one
    or the other, so that the data's checks are reached)."""
    cls = draw(st.sampled_from([StockAdded, OrderCreated]))
    doc = Envelope.wrap(sample(cls), aggregate_version=1).to_dict()
    numbers: dict[str, str] = {}
    changes = [(doc, key) for key in draw(st.lists(st.sampled_from(ENVELOPE_KEYS), max_size=2) | st.just([]))]
    data_keys = st.sampled_from([*sorted(doc["data"]), "extra"])
    changes += [(doc["data"], key) for key in draw(st.lists(data_keys, max_size=2))]
    for target, key in changes:
        if not isinstance(target, dict):
            continue
        choice = draw(st.integers(0, 9))
        if choice == 0:
            target.pop(key, None)
        elif choice <= 2:
            marker = f"@number{len(numbers)}@"
            numbers[f'"{marker}"'] = draw(st.sampled_from(NUMBERS))
            target[key] = marker
        elif choice <= 4:
            length = LIMITS.get(key, MAX_ID_LENGTH) + draw(st.sampled_from([0, 1]))
            target[key] = draw(st.sampled_from("a\u00e9\ud800")) * length
        elif choice <= 6:
            target[key] = draw(st.sampled_from(SCALARS))
        else:
            target[key] = draw(VALUES)
    text = json.dumps(doc, ensure_ascii=draw(st.booleans()))
    for marker, number in numbers.items():
        text = text.replace(marker, number)
    return text.encode(errors="surrogatepass")


def outcome(read, *, read_from_json: bool) -> tuple:  # type: ignore[no-untyped-def]
    """What reading gives, to compare: every field's value and type, or the error."""
    try:
        envelope = read()
    except EventError as exc:
        return ("refused", type(exc), str(exc))
    fields = {f.name: getattr(envelope, f.name) for f in dataclasses.fields(Envelope)}
    try:
        event = envelope.event(read_from_json=read_from_json)
    except EventError as exc:
        return ("envelope", repr(fields), type(exc), str(exc))
    return ("event", repr(fields), repr(event), {name: type(value) for name, value in vars(event).items()})


def read_both_ways(raw: bytes) -> tuple[tuple, tuple]:  # type: ignore[type-arg]
    """What the fast reading gives (as a consumer reads an entry), and what the full one gives."""
    fast = outcome(lambda: Envelope.from_json(raw, stream="s", entry_id="1-0", received_at=None), read_from_json=True)
    with (
        mock.patch.object(envelope_module, "_read_plain", return_value=None),
        mock.patch.object(envelope_module, "_plain_fields", return_value=None),
        mock.patch.object(events_module._Reader, "plain_values", return_value=None),
        mock.patch.object(events_module._Reader, "convert", return_value=None),
    ):
        full = outcome(
            lambda: Envelope.from_json(raw, stream="s", entry_id="1-0", received_at=None), read_from_json=False
        )
    return fast, full


@hypothesis.settings(
    max_examples=1000, deadline=None, database=None, suppress_health_check=list(hypothesis.HealthCheck)
)
@hypothesis.given(raw=entry_data())
def test_the_fast_reading_of_an_entry_gives_what_the_full_reading_gives(raw):
    fast, full = read_both_ways(raw)
    assert fast == full


def one_change(key: str, value: object) -> bytes:
    doc = Envelope.wrap(sample(StockAdded), aggregate_version=1).to_dict()
    target = doc["data"] if key in StockAdded.__dataclass_fields__ else doc
    target[key] = value
    return json.dumps(doc, ensure_ascii=False).encode(errors="surrogatepass")


EVERY_CHANGE = [
    *((key, char * (limit + extra)) for key, limit in LIMITS.items() for extra in (0, 1) for char in "a\u00e9"),
    *((key, value) for key in [*ENVELOPE_KEYS, *StockAdded.__dataclass_fields__] for value in SCALARS),
    *(("id", value) for value in UUIDS),
    *(("occurred_at", value) for value in TIMES),
]


@pytest.mark.parametrize(("key", "value"), EVERY_CHANGE)
def test_the_fast_reading_of_each_field_at_its_limits_gives_what_the_full_reading_gives(key, value):
    fast, full = read_both_ways(one_change(key, value))
    assert fast == full


@pytest.mark.parametrize(
    "raw",
    [
        b'{"type": "X", "type": "STOCK_ADDED"}',  # a key twice: json keeps the last
        b'{"type": "STOCK_ADDED", "type": "NOPE"}',
        b'{"type": 1, "type": "STOCK_ADDED"}',
        b'{"id": "not-a-uuid", "id": "ID"}',
        b'{"data": {"sku": 1, "sku": "A-1"}}',
        b'{"data": {"sku": "A-1", "sku": 1}}',
    ],
)
def test_the_fast_reading_of_a_key_written_twice_gives_what_the_full_reading_gives(raw):
    doc = Envelope.wrap(sample(StockAdded), aggregate_version=1).to_dict()
    changed = json.dumps(doc)[1:-1].encode()
    body = raw.replace(b'"ID"', json.dumps(doc["id"]).encode())
    if body.startswith(b'{"data"'):  # the data's keys, twice: inside a copy of the data
        data = json.dumps(doc["data"])[1:-1].encode()
        body = body.replace(b'{"data": {', b'{"data": {' + data + b", ")
    fast, full = read_both_ways(b"{" + changed + b", " + body[1:])
    assert fast == full


@pytest.mark.parametrize("number", NUMBERS)
@pytest.mark.parametrize("key", ["version", "aggregate_version", "quantity", "extra"])
def test_the_fast_reading_of_numbers_gives_what_the_full_reading_gives(key, number):
    fast, full = read_both_ways(one_change(key, "@n@").replace(b'"@n@"', number.encode()))
    assert fast == full


def test_the_fast_reading_takes_the_plain_envelope_and_leaves_the_rest_to_the_full_one():
    envelope = Envelope.wrap(sample(StockAdded), aggregate_version=1)
    raw = envelope.to_json().encode()
    assert envelope_module._read_plain(raw) is not None
    assert envelope_module._read_plain(raw[:-1] + b', "n": 18446744073709551616}') is not None
    assert envelope_module._plain_fields(json.loads(raw)) is not None
    nested = raw[:-1] + b', "n": ' + b"[" * 63 + b"]" * 63 + b"}"  # 64 brackets in all
    not_utf8 = raw[:-1] + b', "n": "\xff"}'  # in a key the envelope does not know
    for other in (nested, not_utf8, raw[:-1] + b', "n": NaN}', raw.replace(b'"version":1', b'"version":true'), b"[1]"):
        assert envelope_module._read_plain(other) is None


def test_an_envelope_or_event_read_fast_is_the_one_init_builds():
    """Both are built without __init__ (envelope.from_dict, events._Reader.build): every field must be set
    as __init__ sets it, for the envelope and for every event type."""
    for event_type, cls in registered_event_types().items():
        event = sample(cls)
        envelope = Envelope.wrap(
            event, aggregate_version=2, trace={"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"}
        )
        read = Envelope.from_json(envelope.to_json().encode(), stream="s", entry_id="1-0", received_at=None)
        built = Envelope(**{f.name: getattr(read, f.name) for f in dataclasses.fields(Envelope)})
        assert vars(read) == vars(built) and read == envelope, event_type
        assert events_module._reader(cls).plain, event_type
        assert vars(read.event()) == vars(event) and type(read.event()) is cls, event_type
        as_consumer = read.event(read_from_json=True)
        assert vars(as_consumer) == vars(event) and type(as_consumer) is cls, event_type


def test_the_consumer_builds_an_event_of_plain_fields_in_one_msgspec_call_and_leaves_the_rest_to_from_data():
    data = sample(StockAdded).to_data()
    reader = events_module._reader(StockAdded)
    assert reader.converts and vars(reader.convert(data)) == vars(StockAdded(**data))
    missing = {key: value for key, value in data.items() if key != "sku"}
    for refused in ({**data, "quantity": True}, {**data, "quantity": 1.0}, {**data, "name": None}, missing, [data]):
        assert reader.convert(refused) is None
    # Lists of TypedDicts: msgspec would drop the keys they do not declare, which from_data keeps.
    assert not events_module._reader(OrderCreated).converts


def test_event_ids_are_uuids_of_version_7_in_time_order():
    earlier = [envelope_module.new_event_id() for _ in range(1000)]
    time.sleep(0.002)
    later = envelope_module.new_event_id()
    for event_id in [*earlier, later]:
        parsed = uuid.UUID(event_id)
        assert (parsed.version, parsed.variant, str(parsed)) == (7, uuid.RFC_4122, event_id)
    assert len(set(earlier)) == len(earlier)
    assert all(event_id < later for event_id in earlier)  # a millisecond later sorts after, as text too
    assert uuid.UUID(Envelope.wrap(sample(StockAdded), aggregate_version=1).id).version == 7
