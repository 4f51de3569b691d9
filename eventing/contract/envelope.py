"""The envelope every event travels in: its identity, lineage and payload."""

from __future__ import annotations

import dataclasses
import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import accumulate
from typing import Any

from eventing.contract import context
from eventing.contract.context import MAX_ID_LENGTH
from eventing.contract.errors import InvalidEvent, OversizeEvent, UndecodableEvent, UnsupportedVersion
from eventing.contract.events import MAX_TYPE_LENGTH, Event, event_class, upcast

# The envelope's fields and their JSON types.
_FIELDS: dict[str, type | tuple[type, ...]] = {
    "id": str,
    "type": str,
    "version": int,
    "occurred_at": str,
    "correlation_id": str,
    "causation_id": (str, type(None)),
    "aggregate_type": str,
    "aggregate_id": str,
    "aggregate_version": int,
    "data": dict,
}
# W3C trace context (https://www.w3.org/TR/trace-context/), present when the event was raised inside a
# traced span: the consumers continue that trace. Optional, so envelopes without them stay as they were.
TRACE_FIELDS: dict[str, int] = {"traceparent": 55, "tracestate": 512}  # each field's longest value
# The longest value of each text field: what lands in a column, an index or a log line as it is
# (the envelope's JSON Schema states them too).
FIELD_MAX_LENGTHS = {
    "id": MAX_ID_LENGTH,
    "type": MAX_TYPE_LENGTH,
    "occurred_at": MAX_ID_LENGTH,
    "correlation_id": MAX_ID_LENGTH,
    "causation_id": MAX_ID_LENGTH,
    "aggregate_type": MAX_ID_LENGTH,
    "aggregate_id": MAX_ID_LENGTH,
}
# Integers are stored as 64-bit ones (MongoDB's and the databases' widest).
_INT64 = range(-(2**63), 2**63)
_INT_FIELDS = tuple(name for name, kind in _FIELDS.items() if kind is int)
# The deepest nesting of objects and arrays an envelope may have. The events here nest four levels;
# MongoDB refuses documents nested over 100 (the event log embeds the data), and a fixed limit makes
# the answer the same whatever the parser's recursion limit and stack depth at the time.
MAX_NESTING = 64
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def nesting(text: str) -> int:
    """How deep the objects and arrays of JSON ``text`` nest (brackets in strings are not counted). Costly
    on large text: ``from_json`` first counts the brackets, and only text with more than the limit is scanned."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def utcnow() -> datetime:
    return datetime.now(UTC)


def parse_time(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidEvent(f"timestamp {value!r} is not ISO 8601") from None
    if parsed.tzinfo is None:
        raise InvalidEvent(f"timestamp {value!r} has no time zone")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00
        raise InvalidEvent(f"timestamp {value!r} is out of range in UTC") from None


@dataclass(frozen=True, kw_only=True)
class Envelope:
    """What travels on the stream: the event's identity, lineage and payload."""

    id: str
    type: str
    version: int
    occurred_at: datetime
    correlation_id: str
    causation_id: str | None
    aggregate_type: str
    aggregate_id: str
    aggregate_version: int
    data: dict[str, Any]
    traceparent: str | None = None
    tracestate: str | None = None
    # Where and when a consumer received it (for a logged event: when it was logged); not part of the wire format.
    stream: str | None = dataclasses.field(default=None, compare=False)
    entry_id: str | None = dataclasses.field(default=None, compare=False)
    received_at: datetime | None = dataclasses.field(default=None, compare=False)

    @classmethod
    def wrap(cls, event: Event, *, aggregate_version: int, trace: dict[str, str] | None = None) -> Envelope:
        """Envelope a new event, inheriting the ids bound to the current unit of work and ``trace``, the
        W3C trace context of the span it is raised in."""
        event_id = str(uuid.uuid4())
        return cls(
            id=event_id,
            type=event.TYPE,
            version=event.VERSION,
            occurred_at=utcnow(),
            # An event raised outside any request or consumer starts its own transaction.
            correlation_id=context.get_correlation_id() or event_id,
            causation_id=context.get_causation_id(),
            aggregate_type=event.AGGREGATE_TYPE,
            aggregate_id=event.aggregate_id,
            aggregate_version=aggregate_version,
            data=json.loads(json.dumps(event.to_data())),
            traceparent=(trace or {}).get("traceparent"),
            tracestate=(trace or {}).get("tracestate"),
        )

    def to_dict(self) -> dict[str, Any]:
        doc = dataclasses.asdict(self)
        del doc["stream"], doc["entry_id"], doc["received_at"]
        for name in TRACE_FIELDS:
            if doc[name] is None:
                del doc[name]
        return {**doc, "occurred_at": self.occurred_at.isoformat()}

    @property
    def trace_id(self) -> str | None:
        """The trace the event belongs to (32 hex digits), from its ``traceparent``."""
        parts = (self.traceparent or "").split("-")
        return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes, **received: Any) -> Envelope:
        """The envelope of a stream entry's ``data`` (its bytes as read, or text); ``received`` sets where and
        when it was received (``stream``, ``entry_id``, ``received_at``)."""
        if isinstance(raw, bytes):
            try:
                raw = raw.decode()
            except UnicodeDecodeError as exc:
                raise UndecodableEvent(f"envelope is not UTF-8: {exc}") from None
        if raw.count("{") + raw.count("[") > MAX_NESTING and (depth := nesting(raw)) > MAX_NESTING:
            raise OversizeEvent(f"envelope is nested {depth} levels deep, over the {MAX_NESTING}-level limit")
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise UndecodableEvent(f"envelope is not valid JSON: {exc}") from None
        except RecursionError:
            raise UndecodableEvent("envelope is nested too deeply to read") from None
        if not isinstance(doc, dict):
            raise UndecodableEvent(f"envelope must be a JSON object, got {type(doc).__name__}")
        return cls.from_dict(doc, **received)

    @classmethod
    def from_dict(cls, doc: dict[str, Any], **received: Any) -> Envelope:
        for name, kind in _FIELDS.items():
            if name not in doc:
                raise InvalidEvent(f"envelope field {name!r} is missing")
            value = doc[name]
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise InvalidEvent(f"envelope field {name!r} has the wrong type {type(value).__name__}")
        for name in _INT_FIELDS:
            if doc[name] not in _INT64:
                raise InvalidEvent(f"envelope field {name!r} is out of the 64-bit range")
        for name, limit in FIELD_MAX_LENGTHS.items():
            if doc[name] is not None and len(doc[name]) > limit:
                raise OversizeEvent(
                    f"envelope field {name!r} is {len(doc[name])} characters long, over the {limit} limit"
                )
        trace: dict[str, Any] = {}
        for name, limit in TRACE_FIELDS.items():
            value = doc.get(name)
            if value is None:
                continue
            if not isinstance(value, str):
                raise InvalidEvent(f"envelope field {name!r} has the wrong type {type(value).__name__}")
            if len(value) > limit:
                raise OversizeEvent(f"envelope field {name!r} is {len(value)} characters long, over the {limit} limit")
            trace[name] = value
        try:
            event_id = str(uuid.UUID(doc["id"]))
        except ValueError:
            raise InvalidEvent(f"envelope id {doc['id']!r} is not a UUID") from None
        fields = {**{k: doc[k] for k in _FIELDS}, "id": event_id, "occurred_at": parse_time(doc["occurred_at"])}
        return cls(**fields, **trace, **received)

    def event(self) -> Event:
        """The typed payload, upcast from an older version first. Raises EventError for
        an unknown type, a version this code cannot read or a bad payload."""
        cls = event_class(self.type)
        if self.version > cls.VERSION:
            raise UnsupportedVersion(f"{self.type} v{self.version} is newer than this code knows (v{cls.VERSION})")
        data = upcast(self.type, self.data, from_version=self.version, to_version=cls.VERSION)
        return cls.from_data(data)
