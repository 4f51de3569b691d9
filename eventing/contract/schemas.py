"""Event schemas: JSON Schema (draft 2020-12) derived from the event classes.

The schema of an event is the shape of its dataclass fields (``shapes.py``), the
same shapes ``Event.data_errors`` checks values with, so what the schema says
and what publishing and reading enforce cannot drift apart. The committed
snapshots of every version are in ``versions.py``; the readable catalogue is
rendered by ``eventing/catalog.py``.
"""

import copy
import dataclasses
import inspect
import json
from collections.abc import Mapping
from typing import Any, cast

from eventing.contract.envelope import FIELD_MAX_LENGTHS, TRACE_FIELDS
from eventing.contract.errors import InvalidEvent
from eventing.contract.events import Event
from eventing.contract.shapes import hints, record, shape_of

DIALECT = "https://json-schema.org/draft/2020-12/schema"
ENVELOPE_KEY = "envelope"

ENVELOPE_PROPERTIES: dict[str, dict[str, Any]] = {
    "id": {"type": "string", "format": "uuid", "description": "The event's unique id (a UUID)."},
    "type": {"type": "string", "description": "The event type, e.g. ORDER_CREATED."},
    "version": {
        "type": "integer",
        "minimum": 1,
        "description": "The version of the event type that `data` follows; the schema of `data` is `TYPE/vVERSION`.",
    },
    "occurred_at": {
        "type": "string",
        "format": "date-time",
        "description": "When it happened: ISO 8601 with the UTC offset.",
    },
    "correlation_id": {
        "type": "string",
        "description": "The business transaction it belongs to, shared by every event that follows from it.",
    },
    "causation_id": {
        "anyOf": [{"type": "string"}, {"type": "null"}],
        "description": "The id of the event whose handling raised it; null for one raised by a request.",
    },
    "aggregate_type": {"type": "string", "description": "The kind of thing the event is about, e.g. order."},
    "aggregate_id": {"type": "string", "description": "The id of that thing."},
    "aggregate_version": {"type": "integer", "description": "The aggregate's version after this event."},
    "data": {"type": "object", "description": "The payload; its schema is `TYPE/vVERSION`."},
}
# Present only when the event was raised inside a traced span.
TRACE_PROPERTIES: dict[str, dict[str, Any]] = {
    "traceparent": {
        "type": "string",
        "description": "W3C trace context of the span that raised the event; consumers continue its trace.",
    },
    "tracestate": {"type": "string", "description": "W3C vendor trace state that goes with `traceparent`."},
}


# -- Schemas --------------------------------------------------------------------------------------


def type_schema(*, hint: Any) -> dict[str, Any]:
    """The JSON Schema of values of ``hint``. Raises TypeError for a hint with no JSON shape here."""
    return shape_of(hint).schema()


def object_schema(*, fields: Mapping[str, Any], required: list[str]) -> dict[str, Any]:
    """An object with exactly these fields (name -> type hint)."""
    return record(fields=dict(fields), required=required).schema()


def data_schema(*, event_class: type[Event]) -> dict[str, Any]:
    """The shape of the event's ``data``. Every field is required: the producer always writes them all."""
    field_hints = hints(event_class)
    names = [field.name for field in dataclasses.fields(event_class)]
    try:
        return object_schema(fields={name: field_hints[name] for name in names}, required=names)
    except TypeError as exc:
        raise TypeError(f"{event_class.__name__} ({event_class.TYPE}): {exc}") from None


def contract(*, event_class: type[Event]) -> dict[str, Any]:
    """The schema a contract snapshot holds: the shape of ``data`` for the class's version,
    without the prose (a new docstring is not a new version)."""
    return {
        "$schema": DIALECT,
        "title": f"{event_class.TYPE} v{event_class.VERSION}",
        **data_schema(event_class=event_class),
    }


def event_schema(*, event_class: type[Event]) -> dict[str, Any]:
    """The JSON Schema of the event's ``data`` at its current version, with its description."""
    snapshot = contract(event_class=event_class)
    return {
        "$schema": snapshot.pop("$schema"),
        "title": snapshot.pop("title"),
        "description": description(event_class=event_class),
        **snapshot,
    }


def envelope_schema() -> dict[str, Any]:
    """The JSON Schema of the envelope every event travels in (``Envelope.to_dict()``), with the longest
    value of each text field that a consumer reads."""
    properties = copy.deepcopy({**ENVELOPE_PROPERTIES, **TRACE_PROPERTIES})
    for name, limit in {**FIELD_MAX_LENGTHS, **TRACE_FIELDS}.items():
        for branch in properties[name].get("anyOf", [properties[name]]):
            if branch["type"] == "string":
                branch["maxLength"] = limit
    return {
        "$schema": DIALECT,
        "title": "Event envelope",
        "description": "What travels on the stream, as the `data` field of an entry: identity, lineage and payload.",
        "type": "object",
        "properties": properties,
        "required": list(ENVELOPE_PROPERTIES),  # the trace context is there only when the event was traced
        "additionalProperties": False,
    }


def example(*, schema: dict[str, Any]) -> Any:
    """A value that fits ``schema`` (the subset ``type_schema`` writes): every property present."""
    if "anyOf" in schema:
        return example(schema=schema["anyOf"][0])
    kind = schema.get("type")
    if kind == "object":
        return {name: example(schema=sub) for name, sub in schema.get("properties", {}).items()}
    if kind == "array":
        return [example(schema=schema["items"])] if "items" in schema else []
    return {"string": "x", "integer": 1, "boolean": True}.get(str(kind))


def validate_event(*, event: Event) -> dict[str, Any]:
    """Refuse an event that does not fit its own schema, before it is published: a wrong
    type anywhere, a missing or undeclared key in a nested object, or a value JSON cannot hold.
    The event's data as JSON carries it (a copy of its own, for ``Envelope.wrap``)."""
    data = event.to_data()
    errors = type(event).data_errors(data, strict=True)
    if not errors:
        try:
            return cast(dict[str, Any], json.loads(json.dumps(data, allow_nan=False)))
        except (TypeError, ValueError) as exc:
            errors = [f"data is not JSON: {exc}"]
    raise InvalidEvent(f"{event.TYPE} v{event.VERSION} does not fit its schema: {'; '.join(errors[:5])}")


# -- Facts ----------------------------------------------------------------------------------------


def description(*, event_class: type[Event]) -> str:
    """The class docstring; dataclass() invents one from the signature when there is none."""
    doc = event_class.__doc__ or ""
    return "" if doc.startswith(f"{event_class.__name__}(") else inspect.cleandoc(doc)


def producer(*, event_class: type[Event]) -> str:
    """The app that declares the event."""
    return event_class.__module__.split(".")[0]
