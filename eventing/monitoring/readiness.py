"""Readiness: the database, Redis and MongoDB answer, and every declared consumer has a live process.

Answers say what is wrong in words an operator can act on, and never echo an error's text: it could
carry a host or a credential. The details go to the log.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import connection
from pymongo import MongoClient

from eventing.consumer.health import HEALTH_TTL_SECONDS
from eventing.contract import consumers as registry
from eventing.monitoring.status import read_heartbeats
from eventing.transport.client import get_redis

logger = logging.getLogger(__name__)

# A probe must answer fast even when a service hangs: Kubernetes' default probe timeout is 1 s.
PROBE_TIMEOUT_SECONDS = 1.0


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _redis() -> None:
    get_redis(socket_timeout=PROBE_TIMEOUT_SECONDS).ping()


@functools.cache
def _mongo_client(uri: str) -> MongoClient[dict[str, Any]]:
    timeout_ms = int(PROBE_TIMEOUT_SECONDS * 1000)
    return MongoClient(
        uri, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms, socketTimeoutMS=timeout_ms
    )


def _mongodb() -> None:
    _mongo_client(settings.MONGODB_URI).admin.command("ping")


def _consumers() -> dict[str, dict[str, Any]]:
    client = get_redis(socket_timeout=PROBE_TIMEOUT_SECONDS)
    stream = settings.EVENTING_STREAM
    live: dict[str, int] = {}
    for (group, _consumer), record in read_heartbeats(client, stream).items():
        if record.ready:
            live[group] = live.get(group, 0) + 1
    checks: dict[str, dict[str, Any]] = {}
    for name in registry.consumer_names():
        count = live.get(name, 0)
        checks[name] = {"ok": count > 0, "live": count}
        if not count:
            checks[name]["problem"] = f"no live consumer has reported in the last {HEALTH_TTL_SECONDS}s"
    return checks


def _check(name: str, probe: Callable[[], None]) -> dict[str, Any]:
    try:
        probe()
    except Exception as exc:  # noqa: BLE001 - any failure means not ready; the reason is logged, not shown
        logger.warning("readiness: %s does not answer: %s: %s", name, type(exc).__name__, exc)
        return {"ok": False, "problem": f"{name} does not answer ({type(exc).__name__})"}
    return {"ok": True}


def readiness() -> tuple[bool, dict[str, Any]]:
    """(ready, what each check found)."""
    checks: dict[str, Any] = {
        "database": _check("the database", _database),
        "redis": _check("Redis", _redis),
        "mongodb": _check("MongoDB", _mongodb),
    }
    if checks["redis"]["ok"]:
        try:
            checks["consumers"] = _consumers()
        except Exception as exc:  # noqa: BLE001 - as above
            logger.warning("readiness: cannot read consumer heartbeats: %s: %s", type(exc).__name__, exc)
            checks["consumers"] = {"ok": False, "problem": f"cannot read heartbeats ({type(exc).__name__})"}
    else:
        checks["consumers"] = {"ok": False, "problem": "unknown while Redis does not answer"}
    consumers = checks["consumers"]
    consumers_ok = all(c["ok"] for c in consumers.values()) if "ok" not in consumers else consumers["ok"]
    ready = consumers_ok and all(checks[name]["ok"] for name in ("database", "redis", "mongodb"))
    return ready, checks
