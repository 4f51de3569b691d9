"""Typed event payloads and their versions.

An app declares its events in ``<app>/events.py`` as frozen dataclasses that
subclass :class:`Event` and are decorated with :func:`register_event`. Field
values must survive a JSON round trip (str, int, bool, None, lists and dicts
of those); timestamps travel as ISO 8601 strings in UTC.

A change to an event's fields is a new version: bump ``VERSION`` and register
an :func:`upcaster` from the previous version, so that events already on the
stream still read as the current class. The committed schema of every version
lives in ``eventing/contract/snapshots/`` (see ``eventing/contract/versions.py``).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Self, TypeVar, cast

import msgspec

from eventing.contract.errors import DeclarationError, InvalidEvent, UnknownEventType, UnsupportedVersion
from eventing.contract.shapes import Scalar, Shape, hints, shape_of


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
        names = field_names(cls)
        missing = sorted(n for n in names if n not in data)
        if missing:
            return [f"missing field(s) {', '.join(missing)}"]
        unexpected = sorted(str(key) for key in data if key not in names) if strict else []
        if unexpected:
            return [f"field(s) not in the contract: {', '.join(unexpected)}"]
        field_hints = hints(cls)
        return [
            e for name in sorted(names) for e in shape_of(field_hints[name]).errors(data[name], name, strict=strict)
        ]

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Self:
        """The event from its JSON data, checked against the field types. Extra keys are ignored."""
        reader = _reader(cast(Any, cls))
        values = reader.plain_values(data)
        if values is None:  # not in its plainest form: the full check says whether, and where, it is wrong
            errors = cls.data_errors(data)
            if errors:
                raise InvalidEvent(f"{cls.TYPE}: {'; '.join(errors[:5])}")
            names = field_names(cls)
            return cls(**{k: v for k, v in data.items() if k in names})
        return cast(Self, reader.build(values))

    @classmethod
    def from_json_data(cls, data: dict[str, Any]) -> Self:
        """``from_data`` of data as JSON reads it (JSON's own types only, as a consumer reads an entry): the
        same event or the same error, built in one msgspec call when it can be (``_Reader.convert``)."""
        event = _reader(cast(Any, cls)).convert(data)
        return cast(Self, event) if event is not None else cls.from_data(data)

    @property
    def aggregate_id(self) -> str:
        return str(getattr(self, self.AGGREGATE_ID_FIELD))


def field_names(cls: type[Event]) -> frozenset[str]:
    """The data fields of an event class (cached: every event read needs them)."""
    return _field_names(cast(Any, cls))


@functools.cache
def _field_names(cls: Any) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(cls))


class _Reader:
    """How one event class reads its data fast: each field whose hint is str, int or bool is checked by
    its exact JSON type, any other by its shape; and, for a plain dataclass, the instance is built
    without __init__ (whose frozen assignments cost more than the check)."""

    def __init__(self, cls: type[Event]) -> None:
        self.cls = cls
        field_hints = hints(cls)
        self.fields: list[tuple[str, type | None, Shape]] = []
        for name in sorted(field_names(cls)):
            shape = shape_of(field_hints[name])
            exact = shape.kind if isinstance(shape, Scalar) else None
            self.fields.append((name, exact, shape))
        # __init__ would only assign the fields: a dataclass's own, with no __post_init__ and no slots.
        self.plain = (
            "__init__" in vars(cls)
            and getattr(vars(cls).get("__dataclass_params__"), "init", False)
            and not hasattr(cls, "__post_init__")
            and not any("__slots__" in vars(kind) for kind in cls.__mro__)
            and all(field.init for field in dataclasses.fields(cls))
        )
        # msgspec builds such an event from JSON's data in one call (without __init__, as ``build``), when every
        # field is a str, int or bool: it checks their exact types as ``plain_values`` does. A list or an object
        # would be read differently (msgspec drops the keys a TypedDict does not declare), so those stay here.
        self.converts = self.plain and all(exact is not None for _name, exact, _shape in self.fields)

    def plain_values(self, data: Any) -> dict[str, Any] | None:
        """The field values when ``data`` holds each with the exact type of a str, int or bool field, or one
        its shape finds no fault with; None when it does not (``data_errors`` then decides)."""
        if type(data) is not dict:
            return None
        values = {}
        for name, exact, shape in self.fields:
            try:
                value = data[name]
            except KeyError:
                return None
            if exact is not None:
                if type(value) is not exact:
                    return None
            elif shape.errors(value, name, strict=False):
                return None
            values[name] = value
        return values

    def convert(self, data: Any) -> Event | None:
        """The event of ``data`` read from JSON, in one msgspec call; None when its fields are not all str, int or
        bool, or msgspec refuses the data (``from_data`` then decides). Only for data of JSON's own types:
        msgspec would turn an int subclass (say, a BSON Int64) into an int, where ``from_data`` keeps it."""
        if not self.converts:
            return None
        try:
            return msgspec.convert(data, self.cls)
        except (msgspec.ValidationError, UnicodeEncodeError):  # or a lone surrogate, which json reads
            return None

    def build(self, values: dict[str, Any]) -> Event:
        if not self.plain:
            return self.cls(**values)
        event = object.__new__(self.cls)
        vars(event).update(values)
        return event


@functools.cache
def _reader(cls: Any) -> _Reader:
    return _Reader(cls)


_EVENT_TYPES: dict[str, type[Event]] = {}

# The longest event type name: what the outbox's and the dead letters' type columns hold.
MAX_TYPE_LENGTH = 100

E = TypeVar("E", bound=type[Event])


def register_event(cls: E) -> E:
    """Class decorator: make an event type known to the bus. Names are unique."""
    if isinstance(cls.VERSION, bool) or not isinstance(cls.VERSION, int) or cls.VERSION < 1:
        raise DeclarationError(f"{cls.__name__}.VERSION must be an integer from 1, got {cls.VERSION!r}")
    if not 0 < len(cls.TYPE) <= MAX_TYPE_LENGTH:
        raise DeclarationError(f"{cls.__name__}.TYPE must be 1 to {MAX_TYPE_LENGTH} characters, got {cls.TYPE!r}")
    existing = _EVENT_TYPES.get(cls.TYPE)
    if existing is not None and existing is not cls:
        raise DeclarationError(
            f"event type {cls.TYPE!r} is registered twice ({existing.__module__} and {cls.__module__})"
        )
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
        raise DeclarationError(
            f"upcaster for {event_type}: from_version must be an integer from 1, got {from_version!r}"
        )

    def decorator(func: U) -> U:
        existing = _UPCASTERS.get((event_type, from_version))
        if existing is not None and existing is not func:
            raise DeclarationError(
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
