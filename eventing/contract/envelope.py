"""The envelope every event travels in: its identity, lineage and payload."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import accumulate
from operator import itemgetter
from typing import Annotated, Any, NotRequired, TypedDict, cast

import msgspec

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

_ENVELOPE_VALUES = itemgetter(*_FIELDS)
# An id as str(uuid.UUID(id)) writes it: such an id is a UUID and needs no normalising.
CANONICAL_UUID_PATTERN = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
CANONICAL_UUID = re.compile(CANONICAL_UUID_PATTERN)
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def nesting(text: str) -> int:
    """How deep the objects and arrays of JSON ``text`` nest (brackets in strings are not counted). Costly
    on large text: ``from_json`` first counts the brackets, and only text with more than the limit is scanned."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def new_event_id() -> str:
    """A new event id: a UUID of version 7 (RFC 9562), whose first 48 bits are the Unix time in milliseconds
    and the other 74 not fixed by the format random, so ids made later sort after (within a millisecond, in
    any order). The inbox's unique key and the event log's ``_id`` lead with the event id: ids in time order
    go to the last few pages of those indexes, where random ones (version 4) each dirty a page of their own
    (on SQLite with 100k inbox rows kept, 100-row commits cost 2 instead of 19 us per row here)."""
    random = int.from_bytes(os.urandom(10))  # 80 bits: 12 after the version, 62 after the variant
    value = (time.time_ns() // 1_000_000) << 80 | 0x7 << 76 | (random >> 68) << 64 | 0b10 << 62 | random & _62_BITS
    return str(uuid.UUID(int=value))


_62_BITS = (1 << 62) - 1


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
    def wrap(
        cls,
        event: Event,
        *,
        aggregate_version: int,
        trace: dict[str, str] | None = None,
        data: dict[str, Any] | None = None,
    ) -> Envelope:
        """Envelope a new event, inheriting the ids bound to the current unit of work and ``trace``, the
        W3C trace context of the span it is raised in. ``data`` is the event's data as JSON carries it, when
        the caller already has it (``validate_event`` returns it), a copy the envelope keeps."""
        event_id = new_event_id()
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
            data=json.loads(json.dumps(event.to_data())) if data is None else data,
            traceparent=(trace or {}).get("traceparent"),
            tracestate=(trace or {}).get("tracestate"),
        )

    def to_dict(self) -> dict[str, Any]:
        """The envelope's JSON document, a copy of its own (its ``data`` copied as ``dataclasses.asdict`` would)."""
        return {**self._document(), "data": copy.deepcopy(self.data)}

    def _document(self) -> dict[str, Any]:
        """The fields that travel, as ``to_dict`` gives them but with ``data`` itself, not a copy."""
        doc = {name: getattr(self, name) for name in _WIRE_FIELDS}
        for name in TRACE_FIELDS:
            if doc[name] is None:
                del doc[name]
        doc["occurred_at"] = self.occurred_at.isoformat()
        return doc

    @property
    def trace_id(self) -> str | None:
        """The trace the event belongs to (32 hex digits), from its ``traceparent``."""
        parts = (self.traceparent or "").split("-")
        return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None

    def to_json(self) -> str:
        # Not to_dict(): json.dumps only reads data, and copying it cost more than the dumps
        # (an ORDER_CREATED of one line: 82 us through dataclasses.asdict, against 16 now).
        return json.dumps(self._document(), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(
        cls,
        raw: str | bytes,
        *,
        stream: str | None = None,
        entry_id: str | None = None,
        received_at: datetime | None = None,
    ) -> Envelope:
        """The envelope of a stream entry's ``data`` (its bytes as read, or text), received from ``stream`` as
        its entry ``entry_id`` at ``received_at``."""
        plain = _read_plain(raw) if isinstance(raw, bytes) else None
        if plain is not None:
            fields = cast(dict[str, Any], plain)
            fields["occurred_at"] = parse_time(plain["occurred_at"])  # the last check, as in _checked_fields
            return cls._built(fields, stream, entry_id, received_at)
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
        return cls.from_dict(doc, stream=stream, entry_id=entry_id, received_at=received_at)

    @classmethod
    def from_dict(
        cls,
        doc: dict[str, Any],
        *,
        stream: str | None = None,
        entry_id: str | None = None,
        received_at: datetime | None = None,
    ) -> Envelope:
        """The envelope of a decoded document, every field checked; EventError says what is wrong."""
        fields = _plain_fields(doc)
        if fields is None:  # something is off: the full checks say what, in their order
            fields = _checked_fields(doc)
        return cls._built(fields, stream, entry_id, received_at)

    @classmethod
    def _built(
        cls, fields: dict[str, Any], stream: str | None, entry_id: str | None, received_at: datetime | None
    ) -> Envelope:
        """The envelope of checked ``fields`` (a dict of the caller's own, which becomes the envelope's state),
        built without __init__, whose frozen-dataclass assignments cost more than the checks; every field is
        set (test_an_envelope_or_event_read_fast_is_the_one_init_builds)."""
        for name in TRACE_FIELDS:
            fields.setdefault(name, None)
        fields["stream"] = stream
        fields["entry_id"] = entry_id
        fields["received_at"] = received_at
        envelope = object.__new__(cls)
        object.__setattr__(envelope, "__dict__", fields)
        return envelope

    def event(self, *, read_from_json: bool = False) -> Event:
        """The typed payload, upcast from an older version first. Raises EventError for
        an unknown type, a version this code cannot read or a bad payload. ``read_from_json``: the envelope
        was read from JSON (``from_json``), so its data holds JSON's own types only, and an event of the
        current version is built by ``Event.from_json_data``."""
        cls = event_class(self.type)
        if self.version > cls.VERSION:
            raise UnsupportedVersion(f"{self.type} v{self.version} is newer than this code knows (v{cls.VERSION})")
        if read_from_json and self.version == cls.VERSION:
            return cls.from_json_data(self.data)
        data = upcast(self.type, self.data, from_version=self.version, to_version=cls.VERSION)
        return cls.from_data(data)


# The fields that travel (``Envelope.to_dict``): all but where and when a consumer received it.
_WIRE_FIELDS = tuple(
    field.name for field in dataclasses.fields(Envelope) if field.name not in ("stream", "entry_id", "received_at")
)

_Id = Annotated[str, msgspec.Meta(max_length=MAX_ID_LENGTH)]
_Int64 = Annotated[int, msgspec.Meta(ge=_INT64_MIN, le=_INT64_MAX)]


class _PlainEnvelope(TypedDict):
    """An envelope in its plainest form, as msgspec reads it from JSON in one go, straight into the dict of the
    envelope's fields (several times faster than json, then the checks): every field of its JSON type and
    within its limits, the id a UUID as str(UUID) writes it (checked by ``_read_plain``). What passes here
    passes every check of ``_checked_fields`` with the same values; anything else fails here and takes the
    full path, which says what is wrong. msgspec refuses what json refuses, and some of what json reads (NaN,
    infinities, a lone surrogate), never reading a value differently (tests/eventing/test_events.py compares
    them)."""

    # Not a msgspec pattern: matching the id with CANONICAL_UUID after the decoding costs half as much.
    id: _Id
    type: Annotated[str, msgspec.Meta(max_length=MAX_TYPE_LENGTH)]
    version: _Int64
    occurred_at: _Id
    correlation_id: _Id
    causation_id: _Id | None
    aggregate_type: _Id
    aggregate_id: _Id
    aggregate_version: _Int64
    data: dict[str, Any]
    traceparent: NotRequired[Annotated[str, msgspec.Meta(max_length=TRACE_FIELDS["traceparent"])] | None]
    tracestate: NotRequired[Annotated[str, msgspec.Meta(max_length=TRACE_FIELDS["tracestate"])] | None]


_PLAIN_READER = msgspec.json.Decoder(_PlainEnvelope)


def _read_plain(raw: bytes) -> _PlainEnvelope | None:
    """The plain envelope of an entry's bytes; None when it is not one (or is nested over the limit, which
    the full reading measures), and the full reading decides."""
    if raw.count(b"{") + raw.count(b"[") > MAX_NESTING:
        return None
    try:
        if not raw.isascii():
            raw.decode()  # msgspec skips the keys it does not know unchecked; json refuses any byte not UTF-8
        plain = _PLAIN_READER.decode(raw)
    except (msgspec.MsgspecError, ValueError):  # not JSON, not plain, or bytes that are not UTF-8 in a string
        return None
    return plain if CANONICAL_UUID.fullmatch(plain["id"]) else None


def _plain_fields(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The envelope's fields when ``doc`` passes every check of ``_checked_fields`` in its plainest form:
    each value of JSON's own type, within its limits, the id a UUID as str(UUID) writes it. None
    otherwise, and ``_checked_fields`` decides. The same result as it, in a fraction of the time."""
    try:
        (event_id, event_type, version, occurred_at, correlation_id, causation_id, aggregate_type, aggregate_id,
         aggregate_version, data) = _ENVELOPE_VALUES(doc)  # fmt: skip
    except KeyError:
        return None
    if not (
        type(event_id) is str
        and CANONICAL_UUID.fullmatch(event_id)
        and type(event_type) is str
        and len(event_type) <= MAX_TYPE_LENGTH
        and type(version) is int
        and _INT64_MIN <= version <= _INT64_MAX
        and type(occurred_at) is str
        and len(occurred_at) <= MAX_ID_LENGTH
        and type(correlation_id) is str
        and len(correlation_id) <= MAX_ID_LENGTH
        and (causation_id is None or (type(causation_id) is str and len(causation_id) <= MAX_ID_LENGTH))
        and type(aggregate_type) is str
        and len(aggregate_type) <= MAX_ID_LENGTH
        and type(aggregate_id) is str
        and len(aggregate_id) <= MAX_ID_LENGTH
        and type(aggregate_version) is int
        and _INT64_MIN <= aggregate_version <= _INT64_MAX
        and type(data) is dict
    ):
        return None
    trace = {}
    for name, limit in TRACE_FIELDS.items():
        value = doc.get(name)
        if value is not None:
            if type(value) is not str or len(value) > limit:
                return None
            trace[name] = value
    return {
        "id": event_id,
        "type": event_type,
        "version": version,
        "occurred_at": parse_time(occurred_at),  # the last check, as in _checked_fields
        "correlation_id": correlation_id,
        "causation_id": causation_id,
        "aggregate_type": aggregate_type,
        "aggregate_id": aggregate_id,
        "aggregate_version": aggregate_version,
        "data": data,
        **trace,
    }


def _checked_fields(doc: dict[str, Any]) -> dict[str, Any]:
    """The envelope's fields from ``doc``, each checked; EventError for the first check it fails."""
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
            raise OversizeEvent(f"envelope field {name!r} is {len(doc[name])} characters long, over the {limit} limit")
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
    return {**{k: doc[k] for k in _FIELDS}, "id": event_id, "occurred_at": parse_time(doc["occurred_at"]), **trace}
