from collections.abc import Iterator

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from eventing.telemetry import tracing


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on for the test, every finished span kept in memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    assert tracing.configure(service_name="test", provider=provider)
    yield exporter
    tracing.shutdown()


@pytest.fixture
def console() -> Client:
    """A browser session of a superuser in the admin."""
    client = Client()
    client.force_login(get_user_model().objects.create_superuser(username="console-admin", password="pw-admin"))
    return client


def staff_client(staff, *codenames: str) -> Client:
    """A browser session of ``staff`` holding only the named eventing permissions."""
    staff.user_permissions.add(*Permission.objects.filter(content_type__app_label="eventing", codename__in=codenames))
    client = Client()
    client.force_login(staff)
    return client
