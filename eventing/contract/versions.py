"""The committed contract snapshots: the schema of every version of every event that was ever
published, in ``snapshots/<TYPE>.v<VERSION>.json``.

``contract_problems`` compares the code against them (tests/eventing/test_contracts.py), and
``manage.py event_catalog --update-contracts`` writes the snapshot of a new version.
"""

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from eventing.contract.errors import EventError
from eventing.contract.events import Event, registered_event_types, registered_upcasters, upcast
from eventing.contract.schemas import ENVELOPE_KEY, contract, envelope_schema, event_schema, example

logger = logging.getLogger(__name__)

CONTRACTS_DIR = Path(__file__).resolve().parent / "snapshots"
UPDATE_CONTRACTS = "manage.py event_catalog --update-contracts"


class ContractError(Exception):
    """A contract snapshot cannot be written: the fields changed without a version bump."""


def json_text(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


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
        path.write_text(json_text(contract(event_class=cls)), encoding="utf-8")
        logger.debug("wrote the contract snapshot %s", path)
        written.append(path)
    return written
