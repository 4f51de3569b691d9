"""The event contract: typed event payloads and the envelope they travel in.

An app declares its events in ``<app>/events.py`` as frozen dataclasses that
subclass :class:`Event` and are decorated with :func:`register_event`. Field
values must survive a JSON round trip (str, int, bool, None, lists and dicts
of those); timestamps travel as ISO 8601 strings in UTC.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Self, TypeVar

from eventing import context


class EventError(Exception):
    """An event or envelope does not match the contract. ``reason`` names the
    kind of failure, as recorded on a dead letter."""

    reason = "invalid event"


class UndecodableEvent(EventError):
    reason = "undecodable"


class InvalidEvent(EventError):
    reason = "invalid event"


class UnknownEventType(EventError):
    reason = "unknown type"


class UnsupportedVersion(EventError):
    reason = "unsupported version"


def _type_errors(value: Any, hint: Any, path: str) -> list[str]:
    """Where ``value`` does not have the shape ``hint`` describes (str, int, bool,
    list[...], dict, TypedDict, X | None)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        return (
            [] if any(not _type_errors(value, option, path) for option in options) else [f"{path} has the wrong type"]
        )
    if hint is type(None):
        return [] if value is None else [f"{path} must be null"]
    if hint is int:
        return [] if isinstance(value, int) and not isinstance(value, bool) else [f"{path} must be an integer"]
    if hint in (str, bool):
        return [] if isinstance(value, hint) else [f"{path} must be a {hint.__name__}"]
    if origin is list:
        if not isinstance(value, list):
            return [f"{path} must be a list"]
        (item,) = typing.get_args(hint)
        return [error for i, member in enumerate(value) for error in _type_errors(member, item, f"{path}[{i}]")]
    if typing.is_typeddict(hint):
        if not isinstance(value, dict):
            return [f"{path} must be an object"]
        fields = typing.get_type_hints(hint)
        missing = [f"{path}.{name} is missing" for name in fields if name not in value]
        return missing + [
            e for name, sub in fields.items() if name in value for e in _type_errors(value[name], sub, f"{path}.{name}")
        ]
    if hint is dict or origin is dict:
        return [] if isinstance(value, dict) else [f"{path} must be an object"]
    return []


@dataclass(frozen=True, kw_only=True)
class Event:
    """Base class of every domain event payload.

    Subclasses set ``TYPE`` (a stable name), ``VERSION`` (bumped with an
    upcaster whenever the fields change), ``AGGREGATE_TYPE`` and
    ``AGGREGATE_ID_FIELD`` (the field holding the aggregate's id).
    """

    TYPE: ClassVar[str]
    VERSION: ClassVar[int] = 1
    AGGREGATE_TYPE: ClassVar[str]
    AGGREGATE_ID_FIELD: ClassVar[str]

    def to_data(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Self:
        """The event from its JSON data, checked against the field types. Extra keys are ignored."""
        if not isinstance(data, dict):
            raise InvalidEvent(f"{cls.TYPE}: data must be an object, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        missing = sorted(n for n in names if n not in data)
        if missing:
            raise InvalidEvent(f"{cls.TYPE}: missing field(s) {', '.join(missing)}")
        hints = typing.get_type_hints(cls)
        errors = [e for name in sorted(names) for e in _type_errors(data[name], hints[name], name)]
        if errors:
            raise InvalidEvent(f"{cls.TYPE}: {'; '.join(errors[:5])}")
        return cls(**{k: v for k, v in data.items() if k in names})

    @property
    def aggregate_id(self) -> str:
        return str(getattr(self, self.AGGREGATE_ID_FIELD))


_EVENT_TYPES: dict[str, type[Event]] = {}

E = TypeVar("E", bound=type[Event])


def register_event(cls: E) -> E:
    """Class decorator: make an event type known to the bus. Names are unique."""
    existing = _EVENT_TYPES.get(cls.TYPE)
    if existing is not None and existing is not cls:
        raise EventError(f"event type {cls.TYPE!r} is registered twice ({existing.__module__} and {cls.__module__})")
    _EVENT_TYPES[cls.TYPE] = cls
    return cls


def event_class(event_type: str) -> type[Event]:
    try:
        return _EVENT_TYPES[event_type]
    except KeyError:
        raise UnknownEventType(f"unknown event type {event_type!r}") from None


def registered_event_types() -> dict[str, type[Event]]:
    return dict(_EVENT_TYPES)


def utcnow() -> datetime:
    return datetime.now(UTC)


def parse_time(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidEvent(f"timestamp {value!r} is not ISO 8601") from None
    if parsed.tzinfo is None:
        raise InvalidEvent(f"timestamp {value!r} has no time zone")
    return parsed.astimezone(UTC)


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
    # Where a consumer received it; not part of the wire format.
    stream: str | None = dataclasses.field(default=None, compare=False)
    entry_id: str | None = dataclasses.field(default=None, compare=False)

    @classmethod
    def wrap(cls, event: Event, *, aggregate_version: int) -> Envelope:
        """Envelope a new event, inheriting the ids bound to the current unit of work."""
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
        )

    def to_dict(self) -> dict[str, Any]:
        doc = dataclasses.asdict(self)
        del doc["stream"], doc["entry_id"]
        return {**doc, "occurred_at": self.occurred_at.isoformat()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes) -> Envelope:
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise UndecodableEvent(f"envelope is not valid JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise UndecodableEvent("envelope must be a JSON object")
        return cls.from_dict(doc)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Envelope:
        expected: dict[str, type | tuple[type, ...]] = {
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
        for name, kind in expected.items():
            if name not in doc:
                raise InvalidEvent(f"envelope field {name!r} is missing")
            value = doc[name]
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise InvalidEvent(f"envelope field {name!r} has the wrong type {type(value).__name__}")
        try:
            event_id = str(uuid.UUID(doc["id"]))
        except ValueError:
            raise InvalidEvent(f"envelope id {doc['id']!r} is not a UUID") from None
        return cls(**{**{k: doc[k] for k in expected}, "id": event_id, "occurred_at": parse_time(doc["occurred_at"])})

    def event(self) -> Event:
        """The typed payload. Raises EventError for an unknown type or a bad payload."""
        cls = event_class(self.type)
        if self.version > cls.VERSION:
            raise UnsupportedVersion(f"{self.type} v{self.version} is newer than this code knows (v{cls.VERSION})")
        return cls.from_data(self.data)
