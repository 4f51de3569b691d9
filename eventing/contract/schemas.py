"""Event schemas: JSON Schema (draft 2020-12) derived from the event classes, the
event catalogue built from them, and the committed contract snapshots.

The schema of an event is derived from its dataclass fields and type hints, the
same hints ``Event.data_errors`` checks values against, so what the schema
says and what publishing and reading enforce cannot drift apart. Supported
hints: ``str``, ``int``, ``bool``, ``list[X]``, ``dict``/``dict[str, X]``, a
``TypedDict`` (an object with its own keys) and ``X | None``.

``eventing/contracts/<TYPE>.v<VERSION>.json`` holds the schema of every version
that was ever published; ``contract_problems`` compares the code against them
(tests/eventing/test_contracts.py), and ``manage.py event_catalog`` renders the
catalogue in ``docs/``.
"""

import copy
import dataclasses
import inspect
import json
import logging
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from eventing import registry
from eventing.events import (
    Event,
    EventError,
    InvalidEvent,
    registered_event_types,
    registered_upcasters,
    upcast,
)

logger = logging.getLogger(__name__)

DIALECT = "https://json-schema.org/draft/2020-12/schema"
CONTRACTS_DIR = Path(__file__).resolve().parent / "contracts"
CATALOG_MARKDOWN = "events.md"
CATALOG_SCHEMA = "events.schema.json"
ENVELOPE_KEY = "envelope"
UPDATE_CONTRACTS = "manage.py event_catalog --update-contracts"

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


class ContractError(Exception):
    """A contract snapshot cannot be written: the fields changed without a version bump."""


# -- Schemas --------------------------------------------------------------------------------------


def type_schema(*, hint: Any) -> dict[str, Any]:
    """The JSON Schema of values of ``hint``. Raises TypeError for a hint with no JSON shape here."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [type_schema(hint=option) for option in typing.get_args(hint)]}
    if hint is type(None):
        return {"type": "null"}
    if hint is bool:
        return {"type": "boolean"}
    if hint is int:
        return {"type": "integer"}
    if hint is str:
        return {"type": "string"}
    if hint is list or origin is list:
        args = typing.get_args(hint)
        return {"type": "array", "items": type_schema(hint=args[0])} if args else {"type": "array"}
    if typing.is_typeddict(hint):
        hints = typing.get_type_hints(hint)
        return object_schema(fields=hints, required=[name for name in hints if name in hint.__required_keys__])
    if hint is dict or origin is dict:
        args = typing.get_args(hint)
        if not args:
            return {"type": "object"}
        if args[0] is not str:
            raise TypeError(f"{hint!r} has no JSON Schema: JSON object keys are strings")
        return {"type": "object", "additionalProperties": type_schema(hint=args[1])}
    raise TypeError(
        f"{hint!r} has no JSON Schema here; use str, int, bool, list[...], dict[str, ...], a TypedDict or X | None"
    )


def object_schema(*, fields: Mapping[str, Any], required: list[str]) -> dict[str, Any]:
    """An object with exactly these fields (name -> type hint)."""
    return {
        "type": "object",
        "properties": {name: type_schema(hint=hint) for name, hint in fields.items()},
        "required": required,
        "additionalProperties": False,
    }


def data_schema(*, event_class: type[Event]) -> dict[str, Any]:
    """The shape of the event's ``data``. Every field is required: the producer always writes them all."""
    hints = typing.get_type_hints(event_class)
    names = [field.name for field in dataclasses.fields(event_class)]
    try:
        return object_schema(fields={name: hints[name] for name in names}, required=names)
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
    """The JSON Schema of the envelope every event travels in (``Envelope.to_dict()``)."""
    return {
        "$schema": DIALECT,
        "title": "Event envelope",
        "description": "What travels on the stream, as the `data` field of an entry: identity, lineage and payload.",
        "type": "object",
        "properties": copy.deepcopy(ENVELOPE_PROPERTIES),
        "required": list(ENVELOPE_PROPERTIES),
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
    return {"string": "x", "integer": 1, "boolean": True}.get(kind)


def validate_event(*, event: Event) -> None:
    """Refuse an event that does not fit its own schema, before it is published: a wrong
    type anywhere, a missing or undeclared key in a nested object, or a value JSON cannot hold."""
    data = event.to_data()
    errors = type(event).data_errors(data, strict=True)
    if not errors:
        try:
            json.dumps(data, allow_nan=False)
        except (TypeError, ValueError) as exc:
            errors = [f"data is not JSON: {exc}"]
    if errors:
        raise InvalidEvent(f"{event.TYPE} v{event.VERSION} does not fit its schema: {'; '.join(errors[:5])}")


# -- Facts for the catalogue ----------------------------------------------------------------------


def description(*, event_class: type[Event]) -> str:
    """The class docstring; dataclass() invents one from the signature when there is none."""
    doc = event_class.__doc__ or ""
    return "" if doc.startswith(f"{event_class.__name__}(") else inspect.cleandoc(doc)


def producer(*, event_class: type[Event]) -> str:
    """The app that declares the event."""
    return event_class.__module__.split(".")[0]


def consumers(*, event_type: str) -> list[str]:
    """Every consumer with a handler for ``event_type`` (or for every event)."""
    return [name for name in registry.consumer_names() if registry.handlers_for(name, event_type)]


def schema_versions(*, event_class: type[Event], directory: Path = CONTRACTS_DIR) -> dict[int, dict[str, Any]]:
    """The schema of every version: older ones from their committed snapshots, the current one from the code."""
    versions = {}
    for version in range(1, event_class.VERSION):
        snapshot = read_contract(event_type=event_class.TYPE, version=version, directory=directory)
        if snapshot is not None:
            versions[version] = snapshot
    versions[event_class.VERSION] = event_schema(event_class=event_class)
    return versions


def catalog(
    *, event_types: Mapping[str, type[Event]] | None = None, directory: Path = CONTRACTS_DIR
) -> dict[str, dict[str, Any]]:
    """``"envelope"`` and ``"TYPE/vVERSION"`` -> JSON Schema, for every version of every registered type."""
    event_types = registered_event_types() if event_types is None else event_types
    schemas = {ENVELOPE_KEY: envelope_schema()}
    for event_type, cls in sorted(event_types.items()):
        for version, schema in schema_versions(event_class=cls, directory=directory).items():
            schemas[f"{event_type}/v{version}"] = schema
    return schemas


# -- Rendering ------------------------------------------------------------------------------------


def _type_label(schema: dict[str, Any]) -> str:
    if "anyOf" in schema:
        return " or ".join(_type_label(option) for option in schema["anyOf"])
    kind = schema.get("type")
    if kind == "array":
        return f"array of {_type_label(schema['items'])}" if "items" in schema else "array"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"object of {_type_label(schema['additionalProperties'])}"
    if "format" in schema:
        return f"{kind} ({schema['format']})"
    return str(kind or "any")


def _nested_objects(schema: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    """(path prefix, object schema) of the objects with properties inside a field."""
    if "anyOf" in schema:
        return [found for option in schema["anyOf"] for found in _nested_objects(option, path)]
    if schema.get("type") == "array" and "items" in schema:
        return _nested_objects(schema["items"], f"{path}[]")
    if schema.get("type") == "object" and "properties" in schema:
        return [(f"{path}.", schema)]
    return []


def field_rows(*, schema: dict[str, Any], prefix: str = "") -> list[tuple[str, str, bool]]:
    """(name, type, required) for every field of an object schema, nested fields as ``lines[].sku``."""
    rows = []
    for name, sub in schema.get("properties", {}).items():
        rows.append((f"{prefix}{name}", _type_label(sub), name in schema.get("required", [])))
        for nested_prefix, nested in _nested_objects(sub, f"{prefix}{name}"):
            rows.extend(field_rows(schema=nested, prefix=nested_prefix))
    return rows


def _changes(versions: dict[int, dict[str, Any]], version: int) -> str:
    """What ``version`` changed in the fields of the version before it."""
    if version == 1:
        return "first version"
    before, after = versions.get(version - 1), versions[version]
    if before is None:
        return "—"
    old = {name: (kind, required) for name, kind, required in field_rows(schema=before)}
    new = {name: (kind, required) for name, kind, required in field_rows(schema=after)}
    parts = [f"adds `{name}`" for name in new if name not in old]
    parts += [f"removes `{name}`" for name in old if name not in new]
    parts += [f"changes `{name}`" for name in new if name in old and old[name] != new[name]]
    return "; ".join(parts) or "no field changes"


def _upcaster_label(event_type: str, version: int) -> str:
    step = registered_upcasters(event_type).get(version)
    if step is None:
        return "—"
    doc = inspect.getdoc(step) or ""
    summary = " ".join(doc.split("\n\n")[0].split())
    return f"`{step.__module__}.{step.__qualname__}`" + (f": {summary}" if summary else "")


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def _event_section(event_type: str, cls: type[Event], *, directory: Path) -> list[str]:
    schema = event_schema(event_class=cls)
    lines = [f"## {event_type}", ""]
    if schema["description"]:
        lines += [schema["description"], ""]
    lines += [
        f"- Current version: {cls.VERSION}",
        f"- Producer: {producer(event_class=cls)} (`{cls.__module__}.{cls.__qualname__}`)",
        f"- Aggregate: {cls.AGGREGATE_TYPE}, its id in `{cls.AGGREGATE_ID_FIELD}`",
        f"- Consumers: {', '.join(consumers(event_type=event_type)) or 'none'}",
        f"- Schema: `{event_type}/v{cls.VERSION}` in {CATALOG_SCHEMA}",
        "",
    ]
    rows = [(f"`{name}`", kind, "yes" if required else "no") for name, kind, required in field_rows(schema=schema)]
    lines += _table(("Field", "Type", "Required"), rows) + [""]
    versions = schema_versions(event_class=cls, directory=directory)
    if len(versions) > 1 or registered_upcasters(event_type):
        history = [
            (
                f"v{version}" + (" (current)" if version == cls.VERSION else ""),
                _changes(versions, version),
                _upcaster_label(event_type, version),
            )
            for version in range(1, cls.VERSION + 1)
            if version in versions
        ]
        lines += ["Version history:", ""]
        lines += _table(("Version", "Changes", "Upcast to the next version by"), history) + [""]
    return lines


def catalog_markdown(*, event_types: Mapping[str, type[Event]] | None = None, directory: Path = CONTRACTS_DIR) -> str:
    """The readable catalogue: the envelope, then every event type with its fields and versions."""
    event_types = registered_event_types() if event_types is None else event_types
    lines = [
        "# Event catalogue",
        "",
        "<!-- Generated by `manage.py event_catalog` from the event classes and the consumer registry;"
        " do not edit. `manage.py event_catalog --check` fails when it is stale. -->",
        "",
        "Every event is published once to the stream and read by each consumer group that handles its type.",
        f"The JSON Schemas (draft 2020-12) of the envelope and of every version of every event are in"
        f" [{CATALOG_SCHEMA}]({CATALOG_SCHEMA}), keyed `{ENVELOPE_KEY}` and `TYPE/vVERSION`. A consumer reads an"
        " older version through the upcasters listed below; a newer one is dead-lettered as `unsupported version`.",
        "",
        "| Type | Version | Producer | Consumers |",
        "|---|---|---|---|",
        *(
            f"| [{event_type}](#{event_type.lower()}) | {cls.VERSION} | {producer(event_class=cls)}"
            f" | {', '.join(consumers(event_type=event_type)) or 'none'} |"
            for event_type, cls in sorted(event_types.items())
        ),
        "",
        "## Envelope",
        "",
        envelope_schema()["description"],
        "",
        *_table(
            ("Field", "Type", "Meaning"),
            [(f"`{name}`", _type_label(sub), sub["description"]) for name, sub in ENVELOPE_PROPERTIES.items()],
        ),
        "",
    ]
    for event_type, cls in sorted(event_types.items()):
        lines += _event_section(event_type, cls, directory=directory)
    return "\n".join(lines).rstrip("\n") + "\n"


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


def catalog_files(
    *, event_types: Mapping[str, type[Event]] | None = None, directory: Path = CONTRACTS_DIR
) -> dict[str, str]:
    """File name -> content of the catalogue: the Markdown and the JSON Schemas."""
    return {
        CATALOG_MARKDOWN: catalog_markdown(event_types=event_types, directory=directory),
        CATALOG_SCHEMA: _json(catalog(event_types=event_types, directory=directory)),
    }


def _stale(files: dict[str, str], output_dir: Path) -> dict[Path, str]:
    return {
        output_dir / name: content
        for name, content in files.items()
        if not (output_dir / name).is_file() or (output_dir / name).read_text(encoding="utf-8") != content
    }


def catalog_stale(*, output_dir: Path) -> list[Path]:
    """The catalogue files in ``output_dir`` that are missing or differ from what the code gives."""
    return list(_stale(catalog_files(), output_dir))


def catalog_write(*, output_dir: Path) -> list[Path]:
    """Write the catalogue files that changed; the paths written."""
    output_dir.mkdir(parents=True, exist_ok=True)
    stale = _stale(catalog_files(), output_dir)
    for path, content in stale.items():
        path.write_text(content, encoding="utf-8")
        logger.debug("wrote %s", path)
    return list(stale)


# -- Contracts ------------------------------------------------------------------------------------


def contract_path(*, event_type: str, version: int, directory: Path = CONTRACTS_DIR) -> Path:
    return directory / f"{event_type}.v{version}.json"


def read_contract(*, event_type: str, version: int, directory: Path = CONTRACTS_DIR) -> dict[str, Any] | None:
    path = contract_path(event_type=event_type, version=version, directory=directory)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def contract_problems(
    *, event_types: Mapping[str, type[Event]] | None = None, directory: Path = CONTRACTS_DIR
) -> list[str]:
    """Where the event classes break their committed contracts: fields changed without a
    version bump, a version without an upcaster from the one before, a missing snapshot,
    or upcasters that do not turn an older version's data into valid current data."""
    event_types = registered_event_types() if event_types is None else event_types
    problems = []
    for event_type, cls in sorted(event_types.items()):
        version = cls.VERSION
        snapshot = read_contract(event_type=event_type, version=version, directory=directory)
        current = contract(event_class=cls)
        if snapshot is None:
            path = contract_path(event_type=event_type, version=version, directory=directory)
            problems.append(f"{event_type} v{version} has no contract snapshot {path.name}: run `{UPDATE_CONTRACTS}`")
        elif snapshot != current:
            problems.append(
                f"fields of {event_type} changed without a version bump: "
                f"bump VERSION and add an upcaster from v{version}"
            )
        steps = registered_upcasters(event_type)
        missing_steps = [older for older in range(1, version) if older not in steps]
        problems += [
            f"{event_type} v{older + 1} has no upcaster from v{older}: "
            f"add @upcaster({event_type!r}, from_version={older})"
            for older in missing_steps
        ]
        problems += [
            f"{event_type} has an upcaster from v{older} but its VERSION is {version}: bump VERSION"
            for older in steps
            if older >= version
        ]
        # Only worth asking once the current version itself is sound.
        if snapshot == current and not missing_steps:
            problems += _upcasting_problems(event_type, cls, directory=directory)
    return problems


def _upcasting_problems(event_type: str, cls: type[Event], *, directory: Path) -> list[str]:
    """Whether an example of every older snapshot upcasts to data the current class accepts."""
    problems = []
    for older in range(1, cls.VERSION):
        snapshot = read_contract(event_type=event_type, version=older, directory=directory)
        if snapshot is None:
            continue
        try:
            data = upcast(event_type, example(schema=snapshot), from_version=older, to_version=cls.VERSION)
        except EventError as exc:
            problems.append(f"a v{older} {event_type} cannot be upcast: {exc}")
            continue
        errors = cls.data_errors(data, strict=True)
        if errors:
            problems.append(
                f"a v{older} {event_type} upcast to v{cls.VERSION} does not fit v{cls.VERSION}: {'; '.join(errors)}"
            )
    return problems


def contracts_update(
    *, event_types: Mapping[str, type[Event]] | None = None, directory: Path = CONTRACTS_DIR
) -> list[Path]:
    """Write the snapshot of each event's current version that ``directory`` lacks; the paths written.

    An existing snapshot is never rewritten: events of that version may already be on
    the stream, so changed fields need a new version. Raises ContractError for those.
    """
    event_types = registered_event_types() if event_types is None else event_types
    changed = []
    missing = []
    for event_type, cls in sorted(event_types.items()):
        snapshot = read_contract(event_type=event_type, version=cls.VERSION, directory=directory)
        if snapshot is None:
            missing.append(cls)
        elif snapshot != contract(event_class=cls):
            changed.append(
                f"fields of {event_type} changed without a version bump: "
                f"bump VERSION and add an upcaster from v{cls.VERSION}"
            )
    if changed:
        raise ContractError("; ".join(changed))
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for cls in missing:
        path = contract_path(event_type=cls.TYPE, version=cls.VERSION, directory=directory)
        path.write_text(_json(contract(event_class=cls)), encoding="utf-8")
        logger.debug("wrote the contract snapshot %s", path)
        written.append(path)
    return written
