"""Fixtures shared by the whole suite.

Every test runs against the real Redis and FerretDB that `make test` starts
(scripts/services). Each test gets its own stream name and its own Mongo
database, and removes both afterwards.
"""

import uuid
from collections.abc import Iterator

import mongoengine
import pytest
import redis
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from pymongo import MongoClient
from rest_framework.test import APIClient

from eventing.readside import mongo
from eventing.transport.client import REDIS_ERRORS, get_redis

# Measurements the end-to-end and fault tests make, shown at the end of the run.
REPORTS: list[str] = []

SERVICES_HINT = "start them with `scripts/services start` (make test does this)"


def pytest_sessionstart(session: pytest.Session) -> None:
    import django

    django.setup()
    try:
        get_redis(socket_timeout=3).ping()
    except REDIS_ERRORS as exc:
        pytest.exit(f"Redis at {django_settings.REDIS_URL} is not reachable ({exc}); {SERVICES_HINT}", returncode=3)
    try:
        MongoClient(django_settings.MONGODB_URI, serverSelectionTimeoutMS=3000).admin.command("ping")
    except Exception as exc:  # noqa: BLE001 - any failure means the server is unusable
        pytest.exit(f"MongoDB at {django_settings.MONGODB_URI} is not reachable ({exc}); {SERVICES_HINT}", returncode=3)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in REPORTS:
        terminalreporter.write_line(line)


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def mongo_uri_for(database: str) -> str:
    base, _, _ = django_settings.MONGODB_URI.partition("?")
    scheme, _, rest = base.partition("://")
    hosts = rest.split("/", 1)[0]
    return f"{scheme}://{hosts}/{database}"


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):  # type: ignore[no-untyped-def]
    # The real hasher is slow by design; tests create many users.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def redis_client() -> redis.Redis:
    return get_redis()


@pytest.fixture(autouse=True)
def stream(settings, redis_client: redis.Redis) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A stream of this test's own, removed afterwards."""
    name = unique("test-stream")
    settings.EVENTING_STREAM = name
    yield name
    # The stream or its partitions ({name:p0}, …), their retry and dead-letter streams, and the consumers' bookkeeping.
    keys = list(redis_client.scan_iter(f"*{name}*"))
    if keys:
        redis_client.delete(*keys)


@pytest.fixture(autouse=True)
def mongo_db() -> Iterator[str]:
    """A Mongo database of this test's own, dropped afterwards."""
    name = unique("test")
    uri = mongo_uri_for(name)
    mongo.connect(uri)
    yield name
    MongoClient(uri, serverSelectionTimeoutMS=3000).drop_database(name)
    mongoengine.disconnect()
    mongo.connect()


@pytest.fixture
def user(db):  # type: ignore[no-untyped-def]
    return get_user_model().objects.create_user(username="alice", password="pw-alice")


@pytest.fixture
def staff(db):  # type: ignore[no-untyped-def]
    return get_user_model().objects.create_user(username="staff", password="pw-staff", is_staff=True)


@pytest.fixture
def api(user) -> APIClient:  # type: ignore[no-untyped-def]
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def staff_api(staff) -> APIClient:  # type: ignore[no-untyped-def]
    client = APIClient()
    client.force_authenticate(staff)
    return client
