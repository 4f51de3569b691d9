"""Correlation and causation ids for the unit of work in progress.

The web middleware binds a correlation id per request and the consumer binds
the event's correlation id (and the event id as the causation id) while its
handlers run, so every event emitted and every log line carries them.
"""

import logging
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_correlation_id: ContextVar[str | None] = ContextVar("correlation_id", default=None)
_causation_id: ContextVar[str | None] = ContextVar("causation_id", default=None)

# The longest correlation, causation or aggregate id: what the columns and indexes that hold one take.
MAX_ID_LENGTH = 128

# Ids taken from a request header must be safe to log and to index. The timeline's URL takes the same.
CORRELATION_ID_REGEX = rf"[A-Za-z0-9._:-]{{1,{MAX_ID_LENGTH}}}"
_VALID_ID = re.compile(CORRELATION_ID_REGEX)


def new_correlation_id() -> str:
    return str(uuid.uuid4())


def valid_correlation_id(value: str | None) -> str | None:
    """The header value if it is usable as a correlation id, else None."""
    if value and _VALID_ID.fullmatch(value):
        return value
    return None


def get_correlation_id() -> str | None:
    return _correlation_id.get()


def get_causation_id() -> str | None:
    return _causation_id.get()


@contextmanager
def bind(*, correlation_id: str, causation_id: str | None = None) -> Iterator[None]:
    """Bind the ids for the duration of the block, then restore the previous ones."""
    corr_token = _correlation_id.set(correlation_id)
    cause_token = _causation_id.set(causation_id)
    try:
        yield
    finally:
        _causation_id.reset(cause_token)
        _correlation_id.reset(corr_token)


class CorrelationIdFilter(logging.Filter):
    """Adds ``correlation_id`` to every log record ("-" outside a unit of work)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.correlation_id = _correlation_id.get() or "-"
        return True
