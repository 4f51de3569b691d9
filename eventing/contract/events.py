"""The event contract: typed event payloads and the envelope they travel in.

An app declares its events in ``<app>/events.py`` as frozen dataclasses that
subclass :class:`Event` and are decorated with :func:`register_event`. Field
values must survive a JSON round trip (str, int, bool, None, lists and dicts
of those); timestamps travel as ISO 8601 strings in UTC.

A change to an event's fields is a new version: bump ``VERSION`` and register
an :func:`upcaster` from the previous version, so that events already on the
stream still read as the current class. The committed schema of every version
lives in ``eventing/contracts/`` (see ``eventing/schemas.py``).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import types
import typing
import uuid
from collections.abc import Callable
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


@functools.cache
def _hints(kind: Any) -> dict[str, Any]:
    # Resolving hints is slow, and every event read or published needs them.
    return typing.get_type_hints(kind)


def type_errors(value: Any, hint: Any, path: str, *, strict: bool = False) -> list[str]:
    """Where ``value`` does not have the shape ``hint`` describes (str, int, bool,
    list[...], dict[str, ...], TypedDict, X | None). ``strict`` also refuses keys a
    TypedDict does not declare: a producer writes exactly the contract, while a
    reader ignores what it does not know."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        matches = any(not type_errors(value, option, path, strict=strict) for option in options)
        return [] if matches else [f"{path} has the wrong type"]
    if hint is type(None):
        return [] if value is None else [f"{path} must be null"]
    if hint is int:
        return [] if isinstance(value, int) and not isinstance(value, bool) else [f"{path} must be an integer"]
    if hint in (str, bool):
        return [] if isinstance(value, hint) else [f"{path} must be a {hint.__name__}"]
    if hint is list or origin is list:
        if not isinstance(value, list):
            return [f"{path} must be a list"]
        args = typing.get_args(hint)
        if not args:
            return []
        return [
            error
            for i, member in enumerate(value)
            for error in type_errors(member, args[0], f"{path}[{i}]", strict=strict)
        ]
    if typing.is_typeddict(hint):
        if not isinstance(value, dict):
            return [f"{path} must be an object"]
        fields = _hints(hint)
        missing = [
            f"{path}.{name} is missing" for name in fields if name in hint.__required_keys__ and name not in value
        ]
        unexpected = [f"{path}.{name} is not in the contract" for name in value if strict and name not in fields]
        return (
            missing
            + unexpected
            + [
                error
                for name, sub in fields.items()
                if name in value
                for error in type_errors(value[name], sub, f"{path}.{name}", strict=strict)
            ]
        )
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            return [f"{path} must be an object"]
        args = typing.get_args(hint)
        if not args:
            return []
        return [
            error
            for key, member in value.items()
            for error in type_errors(member, args[1], f"{path}.{key}", strict=strict)
        ]
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
    def data_errors(cls, data: Any, *, strict: bool = False) -> list[str]:
        """Where ``data`` breaks this event's contract: every field present with its
        declared type. ``strict`` (the producer's side) also refuses undeclared keys."""
        if not isinstance(data, dict):
            return [f"data must be an object, got {type(data).__name__}"]
        names = [f.name for f in dataclasses.fields(cls)]
        missing = sorted(n for n in names if n not in data)
        if missing:
            return [f"missing field(s) {', '.join(missing)}"]
        unexpected = sorted(str(key) for key in data if key not in names) if strict else []
        if unexpected:
            return [f"field(s) not in the contract: {', '.join(unexpected)}"]
        hints = _hints(cls)
        return [e for name in sorted(names) for e in type_errors(data[name], hints[name], name, strict=strict)]

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Self:
        """The event from its JSON data, checked against the field types. Extra keys are ignored."""
        errors = cls.data_errors(data)
        if errors:
            raise InvalidEvent(f"{cls.TYPE}: {'; '.join(errors[:5])}")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @property
    def aggregate_id(self) -> str:
        return str(getattr(self, self.AGGREGATE_ID_FIELD))


_EVENT_TYPES: dict[str, type[Event]] = {}

E = TypeVar("E", bound=type[Event])


def register_event(cls: E) -> E:
    """Class decorator: make an event type known to the bus. Names are unique."""
    if isinstance(cls.VERSION, bool) or not isinstance(cls.VERSION, int) or cls.VERSION < 1:
        raise EventError(f"{cls.__name__}.VERSION must be an integer from 1, got {cls.VERSION!r}")
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


Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
U = TypeVar("U", bound=Upcaster)

# (event type, from version) -> the function turning that version's data into the next version's.
_UPCASTERS: dict[tuple[str, int], Upcaster] = {}


def upcaster(event_type: str, *, from_version: int) -> Callable[[U], U]:
    """Decorator: register ``func(data) -> data``, a pure function turning the data of
    ``event_type`` version ``from_version`` into the data of version ``from_version + 1``.

    Declare it next to the event class, in the same ``events.py``. There is one
    upcaster per step; registering a step twice is an error.
    """
    if isinstance(from_version, bool) or not isinstance(from_version, int) or from_version < 1:
        raise EventError(f"upcaster for {event_type}: from_version must be an integer from 1, got {from_version!r}")

    def decorator(func: U) -> U:
        existing = _UPCASTERS.get((event_type, from_version))
        if existing is not None and existing is not func:
            raise EventError(
                f"{event_type} has two upcasters from v{from_version}: "
                f"{existing.__module__}.{existing.__qualname__} and {func.__module__}.{func.__qualname__}"
            )
        _UPCASTERS[(event_type, from_version)] = func
        return func

    return decorator


def registered_upcasters(event_type: str) -> dict[int, Upcaster]:
    """from_version -> upcaster for one event type, oldest first."""
    return {version: func for (name, version), func in sorted(_UPCASTERS.items()) if name == event_type}


def upcast(event_type: str, data: dict[str, Any], *, from_version: int, to_version: int) -> dict[str, Any]:
    """``data`` of version ``from_version`` brought to ``to_version`` one registered step
    at a time. Raises UnsupportedVersion when a step has no upcaster, InvalidEvent when
    one fails on this data."""
    version = from_version
    if version < 1:
        raise UnsupportedVersion(f"{event_type} v{version} is not a version (they start at v1)")
    while version < to_version:
        step = _UPCASTERS.get((event_type, version))
        if step is None:
            raise UnsupportedVersion(
                f"{event_type} v{from_version} cannot be read as v{to_version}: "
                f"no upcaster from v{version} to v{version + 1} is registered"
            )
        try:
            # A copy: the envelope (and the event log) keep the data as it was written.
            data = step(copy.deepcopy(data))
        except Exception as exc:  # whatever the bug or bad data, this event cannot be read
            raise InvalidEvent(
                f"{event_type} v{version}: upcaster {step.__qualname__} failed: {type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(data, dict):
            raise InvalidEvent(f"{event_type} v{version}: upcaster {step.__qualname__} returned {type(data).__name__}")
        version += 1
    return data


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
        """The typed payload, upcast from an older version first. Raises EventError for
        an unknown type, a version this code cannot read or a bad payload."""
        cls = event_class(self.type)
        if self.version > cls.VERSION:
            raise UnsupportedVersion(f"{self.type} v{self.version} is newer than this code knows (v{cls.VERSION})")
        data = upcast(self.type, self.data, from_version=self.version, to_version=cls.VERSION)
        return cls.from_data(data)
