"""Relational state recomputed from events alone, compared with the database (``rebuild_state NAME``)."""

from collections.abc import Callable, Iterator
from typing import Any

from eventing.contract.errors import DeclarationError
from eventing.readside.event_log import envelope_from_record, read_log


def logged_events(*, types: list[str], batch_size: int = 2000) -> Iterator[Any]:
    """(envelope, event) for every logged event of ``types``, upcast to the current versions."""
    for record in read_log({"type": {"$in": types}}, batch_size=batch_size):
        envelope = envelope_from_record(record)
        yield envelope, envelope.event()


StateCheck = Callable[[], list[str]]
_STATE_CHECKS: dict[str, StateCheck] = {}


def state_check(name: str) -> Callable[[StateCheck], StateCheck]:
    """Register a function that recomputes an app's relational state from events
    alone and returns its differences with the database (``rebuild_state NAME``)."""

    def decorator(func: StateCheck) -> StateCheck:
        if name in _STATE_CHECKS and _STATE_CHECKS[name] is not func:
            raise DeclarationError(f"state check {name!r} is registered twice")
        _STATE_CHECKS[name] = func
        return func

    return decorator


def state_checks() -> dict[str, StateCheck]:
    return dict(_STATE_CHECKS)
