"""Fault-injection fixtures: the whole system as processes, plus Redis and
FerretDB servers of a test's own when the test kills them."""

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from tests.e2e.system import FerretDBServer, RedisClusterServers, RedisServer, ServerProcess, System

# Fast failure handling, so a fault test recovers in seconds.
FAULT_ENV = {
    "LOG_LEVEL": "INFO",  # the consumers' "skipping the duplicate" lines are counted
    "EVENTING_CLAIM_IDLE_MS": "3000",
    "EVENTING_CLAIM_INTERVAL_MS": "1000",
    "EVENTING_RETRY_BASE_MS": "50",
    "EVENTING_MAX_BACKOFF_SECONDS": "2",
    "EVENTING_RELAY_GRACE_SECONDS": "1",
    "MONGODB_TIMEOUT_MS": "1500",
}


@pytest.fixture
def make_system(tmp_path: Path) -> Iterator[Callable[..., System]]:
    """Build and start a system; every one built is stopped and cleaned up after the test."""
    built: list[System] = []

    def make(
        *, consumers: dict[str, int] | None = None, env: dict[str, str] | None = None, redis_url: str | None = None,
        mongodb_uri: str | None = None,
    ) -> System:  # fmt: skip
        system = System(
            tmp_path,
            redis_url=redis_url or settings.REDIS_URL,
            mongodb_uri=mongodb_uri or settings.MONGODB_URI,
            consumers=consumers,
            env={**FAULT_ENV, **(env or {})},
        )
        built.append(system)
        system.start()
        return system

    yield make
    for system in built:
        system.stop()
        system.cleanup()


def _running(server: ServerProcess) -> Iterator[ServerProcess]:
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    yield from _running(RedisServer(tmp_path))


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[RedisClusterServers]:
    """A Redis Cluster of three masters of the test's own (no replicas), on free ports."""
    cluster = RedisClusterServers(tmp_path)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def ferretdb_server(tmp_path: Path) -> Iterator[FerretDBServer]:
    yield from _running(FerretDBServer(tmp_path))


def consumer_pending(system: System, consumer: str) -> int:
    return sum(
        c["pending"]
        for c in system.redis.xinfo_consumers(system.stream, consumer.rsplit("-", 1)[0])
        if c["name"] == consumer
    )


def report(name: str, **figures: Any) -> None:
    from tests.conftest import REPORTS

    REPORTS.append(f"{name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))
