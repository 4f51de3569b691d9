"""The one walker of type hints: a field's hint becomes a ``Shape`` that both checks
values (what publishing and reading enforce) and writes its JSON Schema (what the
catalogue and the contract snapshots say), so the two cannot drift apart.

Supported hints: ``str``, ``int``, ``bool``, ``list[X]``, ``dict``/``dict[str, X]``,
a ``TypedDict`` (an object with its own keys) and ``X | None``. Any other hint has
no JSON shape here and raises TypeError.
"""

from __future__ import annotations

import functools
import types
import typing
from dataclasses import dataclass
from typing import Any

Schema = dict[str, Any]

SUPPORTED = "use str, int, bool, list[...], dict[str, ...], a TypedDict or X | None"


def hints(kind: type) -> dict[str, Any]:
    """``typing.get_type_hints``, cached: resolving hints is slow, and every event read or published needs them."""
    return _hints(kind)


@functools.cache
def _hints(kind: Any) -> dict[str, Any]:
    return typing.get_type_hints(kind)


class Shape:
    """What values of one type hint look like."""

    def errors(self, value: Any, path: str, *, strict: bool) -> list[str]:
        """Where ``value`` breaks the shape. ``strict`` also refuses keys a TypedDict does not
        declare: a producer writes exactly the contract, while a reader ignores what it does not know."""
        raise NotImplementedError

    def schema(self) -> Schema:
        """The JSON Schema (draft 2020-12) of the shape."""
        raise NotImplementedError


@dataclass(frozen=True)
class Scalar(Shape):
    kind: type
    json_type: str
    article: str

    def errors(self, value: Any, path: str, *, strict: bool) -> list[str]:
        fits = isinstance(value, self.kind) and (self.kind is not int or not isinstance(value, bool))
        return (
            []
            if fits
            else [f"{path} must be {self.article} {self.json_type if self.kind is int else self.kind.__name__}"]
        )

    def schema(self) -> Schema:
        return {"type": self.json_type}


@dataclass(frozen=True)
class Null(Shape):
    def errors(self, value: Any, path: str, *, strict: bool) -> list[str]:
        return [] if value is None else [f"{path} must be null"]

    def schema(self) -> Schema:
        return {"type": "null"}


@dataclass(frozen=True)
class AnyOf(Shape):
    options: tuple[Shape, ...]

    def errors(self, value: Any, path: str, *, strict: bool) -> list[str]:
        matches = any(not option.errors(value, path, strict=strict) for option in self.options)
        return [] if matches else [f"{path} has the wrong type"]

    def schema(self) -> Schema:
        return {"anyOf": [option.schema() for option in self.options]}


@dataclass(frozen=True)
class ListOf(Shape):
    items: Shape | None

    def errors(self, value: Any, path: str, *, strict: bool) -> list[str]:
        if not isinstance(value, list):
            return [f"{path} must be a list"]
        if self.items is None:
            return []
        return [
            error
            for i, member in enumerate(value)
            for error in self.items.errors(member, f"{path}[{i}]", strict=strict)
        ]

    def schema(self) -> Schema:
        return {"type": "array"} if self.items is None else {"type": "array", "items": self.items.schema()}


@dataclass(frozen=True)
class MapOf(Shape):
    values: Shape | None

    def errors(self, value: Any, path: str, *, strict: bool) -> list[str]:
        if not isinstance(value, dict):
            return [f"{path} must be an object"]
        if self.values is None:
            return []
        return [
            error
            for key, member in value.items()
            for error in self.values.errors(member, f"{path}.{key}", strict=strict)
        ]

    def schema(self) -> Schema:
        return (
            {"type": "object"}
            if self.values is None
            else {"type": "object", "additionalProperties": self.values.schema()}
        )


@dataclass(frozen=True)
class Record(Shape):
    """An object with exactly these fields; ``required`` lists the ones that must be present."""

    fields: tuple[tuple[str, Shape], ...]
    required: tuple[str, ...]

    def errors(self, value: Any, path: str, *, strict: bool) -> list[str]:
        if not isinstance(value, dict):
            return [f"{path} must be an object"]
        names = dict(self.fields)
        missing = [f"{path}.{name} is missing" for name in names if name in self.required and name not in value]
        unexpected = [f"{path}.{name} is not in the contract" for name in value if strict and name not in names]
        nested = [
            error
            for name, shape in self.fields
            if name in value
            for error in shape.errors(value[name], f"{path}.{name}", strict=strict)
        ]
        return missing + unexpected + nested

    def schema(self) -> Schema:
        return {
            "type": "object",
            "properties": {name: shape.schema() for name, shape in self.fields},
            "required": list(self.required),
            "additionalProperties": False,
        }


_SCALARS: dict[Any, Shape] = {
    str: Scalar(str, "string", "a"),
    int: Scalar(int, "integer", "an"),
    bool: Scalar(bool, "boolean", "a"),
}


@functools.cache
def shape_of(hint: Any) -> Shape:
    """The shape of values of ``hint``. Raises TypeError for a hint with no JSON shape here."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return AnyOf(tuple(shape_of(option) for option in typing.get_args(hint)))
    if hint is type(None):
        return Null()
    if hint in _SCALARS:
        return _SCALARS[hint]
    if hint is list or origin is list:
        args = typing.get_args(hint)
        return ListOf(shape_of(args[0]) if args else None)
    if typing.is_typeddict(hint):
        fields = hints(hint)
        return record(fields=fields, required=[name for name in fields if name in hint.__required_keys__])
    if hint is dict or origin is dict:
        args = typing.get_args(hint)
        if not args:
            return MapOf(None)
        if args[0] is not str:
            raise TypeError(f"{hint!r} has no JSON Schema: JSON object keys are strings")
        return MapOf(shape_of(args[1]))
    raise TypeError(f"{hint!r} has no JSON Schema here; {SUPPORTED}")


def record(*, fields: dict[str, Any], required: list[str]) -> Record:
    """The shape of an object with exactly these fields (name -> type hint)."""
    return Record(tuple((name, shape_of(hint)) for name, hint in fields.items()), tuple(required))
