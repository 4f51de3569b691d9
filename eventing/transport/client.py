"""The process's Redis clients, built from settings.REDIS_URL."""

from functools import cache

import redis
from django.conf import settings


@cache
def _client(url: str, socket_timeout: float | None) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=socket_timeout,
        socket_connect_timeout=min(socket_timeout or 5.0, 5.0),
        health_check_interval=30,
    )


def get_redis(*, socket_timeout: float | None = 10.0) -> redis.Redis:
    """A shared client. Blocking readers pass a timeout above their BLOCK time."""
    return _client(settings.REDIS_URL, socket_timeout)
