"""Correlation and causation ids for the unit of work in progress.

The web middleware binds a correlation id per request and the consumer binds
the event's correlation id (and the event id as the causation id) while its
handlers run, so every event emitted and every log line carries them.
"""

import logging
import re
import uuid
from contextvars import ContextVar, Token
from types import TracebackType

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


class bind:  # lower case: used as the function it replaced, `with bind(correlation_id=...)`
    """Bind the ids for the duration of the block, then restore the previous ones. A class rather than a
    generator-based context manager: the consumer binds once per event, and this costs less than half as much."""

    __slots__ = ("_correlation_id", "_causation_id", "_tokens")
    _tokens: tuple[Token[str | None], Token[str | None]]

    def __init__(self, *, correlation_id: str, causation_id: str | None = None) -> None:
        self._correlation_id = correlation_id
        self._causation_id = causation_id

    def __enter__(self) -> None:
        self._tokens = (_correlation_id.set(self._correlation_id), _causation_id.set(self._causation_id))

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        corr_token, cause_token = self._tokens
        _causation_id.reset(cause_token)
        _correlation_id.reset(corr_token)


class CorrelationIdFilter(logging.Filter):
    """Adds ``correlation_id`` to every log record ("-" outside a unit of work)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.correlation_id = _correlation_id.get() or "-"
        return True
