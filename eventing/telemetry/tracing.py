"""OpenTelemetry tracing of the bus: one trace per business transaction, from the HTTP request through
every consumer.

- The web request starts the trace (opentelemetry-instrumentation-django).
- ``trace_headers()`` gives the current W3C trace context; the outbox stores it in the envelope
  (``traceparent``, ``tracestate``) next to the correlation id.
- ``consumer_span()`` continues it in a consumer, one span per event, a child of the span that emitted
  the event. Events emitted while it is current carry its context, so the saga stays one trace.
- Redis, pymongo and the database's queries get client spans.

``configure()`` sets it up from the standard ``OTEL_*`` variables (``manage.py`` and ``config/wsgi.py``
call it). With none set, nothing is installed: no span is made and ``consumer_span`` is a no-op, so
tracing costs a flag test per event (bench/consumer_throughput.py measures it).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

logger = logging.getLogger(__name__)

_PROPAGATOR = TraceContextTextMapPropagator()
_tracer: Tracer | None = None  # set by configure(): None means tracing is off
_instrumentors: list[Any] = []


def enabled() -> bool:
    return _tracer is not None


def trace_headers() -> dict[str, str]:
    """The current span's W3C context (``traceparent`` and, if any, ``tracestate``); empty without one."""
    if _tracer is None:
        return {}
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier


@contextmanager
def _span(name: str, parent: Mapping[str, str], attributes: dict[str, Any]) -> Iterator[trace.Span]:
    assert _tracer is not None
    context = _PROPAGATOR.extract(dict(parent)) if parent else otel_context.Context()
    with _tracer.start_as_current_span(name, context=context, kind=SpanKind.CONSUMER, attributes=attributes) as span:
        yield span


def consumer_span(
    *, parent: Mapping[str, str], stream: str, group: str, message_id: str, event_type: str, event_id: str
) -> Any:
    """A context manager: the span of one event's processing by ``group`` (OpenTelemetry's messaging
    conventions), a child of ``parent`` (the envelope's trace context); a no-op when tracing is off."""
    if _tracer is None:
        return nullcontext()
    return _span(
        f"process {event_type}",
        parent,
        {
            "messaging.system": "redis",
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": stream,
            "messaging.consumer.group.name": group,
            "messaging.message.id": message_id,
            "messaging.message.conversation_id": event_id,
            "eventing.event.type": event_type,
        },
    )


def _sql_span(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
    """A Django execute wrapper: a client span around one SQL statement."""
    if _tracer is None:
        return execute(sql, params, many, context)
    operation = sql.split(None, 1)[0].upper() if sql else "SQL"
    attributes = {
        "db.system.name": context["connection"].vendor,
        "db.operation.name": operation,
        "db.query.text": sql,
    }
    with _tracer.start_as_current_span(operation, kind=SpanKind.CLIENT, attributes=attributes):
        return execute(sql, params, many, context)


def _wrap_connection(sender: Any, connection: Any, **kwargs: Any) -> None:
    if _sql_span not in connection.execute_wrappers:
        connection.execute_wrappers.append(_sql_span)


def _database_spans(on: bool) -> None:
    """A client span per SQL statement, on every database connection Django opens (or no more)."""
    from django.db import connections
    from django.db.backends.signals import connection_created

    if on:
        connection_created.connect(_wrap_connection, dispatch_uid="eventing.telemetry.tracing")
    else:
        connection_created.disconnect(dispatch_uid="eventing.telemetry.tracing")
    for connection in connections.all(initialized_only=True):
        if on:
            _wrap_connection(None, connection)
        elif _sql_span in connection.execute_wrappers:
            connection.execute_wrappers.remove(_sql_span)


def configure(*, service_name: str, provider: Any = None) -> bool:
    """Turn tracing on when the environment asks for it (``OTEL_TRACES_EXPORTER``, or an
    ``OTEL_EXPORTER_OTLP_*ENDPOINT``), or with ``provider`` (the tests' in-memory one). True when on."""
    global _tracer
    if _tracer is not None:
        return True
    if provider is None:
        provider = _provider_from_environment(service_name)
        if provider is None:
            return False
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.instrumentation.pymongo import PymongoInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    for instrumentor in (DjangoInstrumentor(), RedisInstrumentor(), PymongoInstrumentor()):
        instrumentor.instrument(tracer_provider=provider)
        _instrumentors.append(instrumentor)
    _tracer = provider.get_tracer("eventing")
    _database_spans(True)
    return True


def shutdown() -> None:
    """Turn tracing off again (tests)."""
    global _tracer
    for instrumentor in _instrumentors:
        instrumentor.uninstrument()
    _instrumentors.clear()
    _database_spans(False)
    _tracer = None


def _provider_from_environment(service_name: str) -> Any:
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return None
    exporters = os.environ.get("OTEL_TRACES_EXPORTER", "")
    if not exporters:
        endpoints = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        exporters = "otlp" if any(os.environ.get(name) for name in endpoints) else "none"
    names = [name.strip() for name in exporters.split(",") if name.strip() and name.strip() != "none"]
    if not names:
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    name = os.environ.get("OTEL_SERVICE_NAME") or service_name
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    for exporter in names:
        if exporter == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        elif exporter == "console":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        else:
            logger.warning("OTEL_TRACES_EXPORTER names %r, which this project does not ship; ignored", exporter)
    trace.set_tracer_provider(provider)
    logger.info("tracing on: %s exporter(s), service %s", ", ".join(names), name)
    return provider
