import json

import pytest

from eventing.contract.envelope import MAX_NESTING, Envelope, nesting
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
