"""Log records carrying the unit of work: the correlation id, the trace and span ids, and the event id.

``LOG_FORMAT=json`` (config/settings.py) makes every line a JSON object with these fields; plain text
stays the development default.
"""

from __future__ import annotations

import logging

from opentelemetry import trace
from pythonjsonlogger.json import JsonFormatter

from eventing.contract import context


class TraceContextFilter(logging.Filter):
    """Adds ``trace_id`` and ``span_id`` (of the current span, when tracing records one) and ``event_id``
    (the event a consumer is applying) to every record; None when there is none."""

    def filter(self, record: logging.LogRecord) -> bool:
        span = trace.get_current_span().get_span_context()
        record.trace_id = format(span.trace_id, "032x") if span.is_valid else None
        record.span_id = format(span.span_id, "016x") if span.is_valid else None
        record.event_id = context.get_causation_id()
        return True


class JsonLogFormatter(JsonFormatter):
    """One JSON object per line: time, level, logger, message, the ids above and any ``extra``."""

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s %(correlation_id)s %(trace_id)s %(span_id)s %(event_id)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            timestamp=False,
        )
