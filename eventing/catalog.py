"""The event catalogue in ``docs/``: a readable ``events.md`` and ``events.schema.json``, rendered from
the event classes, their committed versions and the declared consumers (``manage.py event_catalog``)."""

import inspect
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from eventing.contract.consumers import consumers_of
from eventing.contract.events import Event, registered_event_types, registered_upcasters
from eventing.contract.schemas import ENVELOPE_KEY, ENVELOPE_PROPERTIES, envelope_schema, event_schema, producer
from eventing.contract.versions import CONTRACTS_DIR, catalog, json_text, schema_versions

logger = logging.getLogger(__name__)

CATALOG_MARKDOWN = "events.md"
CATALOG_SCHEMA = "events.schema.json"


def consumers(*, event_type: str) -> list[str]:
    """Every declared consumer with a handler for ``event_type`` (or for every event)."""
    return consumers_of(event_type)


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


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
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


def catalog_files(
    *, event_types: Mapping[str, type[Event]] | None = None, directory: Path = CONTRACTS_DIR
) -> dict[str, str]:
    """File name -> content of the catalogue: the Markdown and the JSON Schemas."""
    return {
        CATALOG_MARKDOWN: catalog_markdown(event_types=event_types, directory=directory),
        CATALOG_SCHEMA: json_text(catalog(event_types=event_types, directory=directory)),
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
